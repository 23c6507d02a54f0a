import DNPipesTestSupport
import XCTest

/// The Kafka backend's metrics while its brokers are away: the endpoint answers, the brokers show as
/// unreachable, and messages they never took count as delivery failures. And what the mount fetches: a pipe
/// written here that no reader opened here is not fetched back, until a stat or a reader wants it.
final class KafkaMetricsTests: RelayedBrokerTestCase {
    let metricsPort = freeLoopbackPort()

    func scrape(file: StaticString = #filePath, line: UInt = #line) -> String {
        ok("python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:\(metricsPort)/metrics\", timeout=5).read().decode(), end=\"\")'",
           timeout: 20, file: file, line: line)
    }

    func testEndpointAnswersWhileTheBrokersAreAway() throws {
        XCTAssertTrue(BrokerRig.startRelay(listen: relayPort, target: brokerPort), "the relay did not start")
        try mount(["--brokers", "127.0.0.1:\(relayPort)", "--metrics-address", "127.0.0.1:\(metricsPort)",
                   "-o", "kafka.message.timeout.ms=3000"])
        ok("seq 1 3 > p")
        ok("cat p > /dev/null 2>&1 & echo $! > \"$ROOT/reader.pid\"")
        var text = scrape()
        XCTAssertTrue(text.contains("dnpipes_kafka_brokers_reachable 1"), text)
        BrokerRig.stopRelay(listen: relayPort)
        // A write whose messages the brokers never take: its close fails once librdkafka gives up.
        let close = sh("python3 -c \"import os; fd = os.open('p', os.O_WRONLY); os.write(fd, b'lost\\\\n'); os.close(fd)\"", timeout: 30)
        XCTAssertNotEqual(close.status, 0, "close should fail while the brokers are away")
        for _ in 0..<50 where !text.contains("dnpipes_kafka_brokers_reachable 0") {
            usleep(200_000)
            text = scrape()
        }
        XCTAssertTrue(text.contains("dnpipes_kafka_brokers_reachable 0"), text)
        XCTAssertTrue(text.contains("dnpipes_kafka_delivery_failures_total{error="), text)
        XCTAssertTrue(text.contains(#"dnpipes_readers{pipe="p"} 1"#), text)
        // librdkafka's own lines go through the daemon's logger, with their client named.
        XCTAssertTrue(log.contains(" librdkafka: client="), log)
        // The outage is one line in the log when it starts and one when it ends.
        XCTAssertTrue(log.contains("Kafka metadata refresh failed") && log.contains("broker=127.0.0.1:\(relayPort)"), log)
        XCTAssertTrue(BrokerRig.startRelay(listen: relayPort, target: brokerPort), "the relay did not start again")
        eventually("grep -q 'Kafka brokers answer again' \"$DATA/dnpipes.log\"", seconds: 20)
        text = scrape()
        XCTAssertTrue(text.contains("dnpipes_kafka_brokers_reachable 1"), text)
        ok("kill $(cat \"$ROOT/reader.pid\")")
    }

    func fetchedMessages(file: StaticString = #filePath, line: UInt = #line) -> Int {
        let text = scrape(file: file, line: line)
        let value = text.split(separator: "\n").first { $0.hasPrefix("dnpipes_kafka_fetched_messages_total ") }
        return value.flatMap { Int(Double($0.split(separator: " ")[1]) ?? -1) } ?? 0
    }

    func testAPipeWrittenHereIsNotFetchedBackWhileItIsWrittenUnlessAStatOrAReaderWantsIt() throws {
        XCTAssertTrue(BrokerRig.startRelay(listen: relayPort, target: brokerPort), "the relay did not start")
        try mount(["--brokers", "127.0.0.1:\(relayPort)", "--metrics-address", "127.0.0.1:\(metricsPort)"])
        ok("mkfifo p")
        XCTAssertEqual(ok("stat -c %s p"), "0\n")                    // the stat starts a stream that counts
        // A writer that keeps the pipe open after its lines: they are acknowledged, and not fetched back.
        ok("(seq 1 50000; touch \"$ROOT/written\"; sleep 6) > p 2>/dev/null & echo $! > \"$ROOT/writer.pid\"")
        eventually("test -e \"$ROOT/written\"", seconds: 20)
        let bytes = ok("seq 1 50000 | wc -c")
        sleep(1)                                                     // time enough to fetch them all, were it fetching
        let whileWriting = fetchedMessages()
        XCTAssertLessThan(whileWriting, 25_000, "a pipe nobody reads here was fetched back as it was written")
        // A stat counts everything pushed before it: the stream fetches again for it.
        XCTAssertEqual(ok("stat -c %s p"), bytes)
        XCTAssertGreaterThanOrEqual(fetchedMessages(), 50_000)
        ok("wait $(cat \"$ROOT/writer.pid\") 2>/dev/null; while kill -0 $(cat \"$ROOT/writer.pid\") 2>/dev/null; do sleep 0.1; done", timeout: 20)
        ok("seq 50001 60000 > p")
        XCTAssertEqual(ok("stat -c %s p"), ok("seq 1 60000 | wc -c"))
        // With no writer left the stream fetches on, so pushes from elsewhere (here `dnpipes push`, another
        // client of the cluster) are counted.
        ok("seq 60001 61000 | \"$DNPIPES\" push --brokers 127.0.0.1:\(relayPort) --topic-prefix '\(topicPrefix)' p", timeout: 30)
        eventually("test \"$(stat -c %s p)\" = \"$(seq 1 61000 | wc -c)\"", seconds: 10)
        // A reader gets every message, from the oldest.
        XCTAssertEqual(ok("wc -l < .drain/p"), "61000\n")
        XCTAssertEqual(ok("sed -n '1p;61000p' .drain/p"), "1\n61000\n")
    }
}
