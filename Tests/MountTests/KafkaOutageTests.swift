import DNPipesTestSupport
import XCTest

/// The broker goes away after mounting and comes back: reads wait, a write whose messages the broker never
/// acknowledged fails at close, and both recover. The broker sits behind a TCP relay this test stops and
/// restarts (and advertises the relay's port), which is what a broker outage looks like to the daemon.
/// KafkaRestartTests stops the broker itself.
final class KafkaOutageTests: MountTestCase {
    override class var backend: Backend { .kafka }
    override var mountsInSetUp: Bool { false }
    var relayPort = 0
    var brokerPort = 0
    var broker: Process?

    override func setUpWithError() throws {
        try super.setUpWithError()
        relayPort = freeLoopbackPort()
        brokerPort = freeLoopbackPort()
        broker = try BrokerRig.startBroker(listen: brokerPort, advertise: relayPort)
        startRelay()
        // A small local queue (librdkafka's default holds 100,000 messages), so that an outage fills it.
        try mount(["--brokers", "127.0.0.1:\(relayPort)", "-o", "kafka.message.timeout.ms=10000",
                   "-o", "kafka.queue.buffering.max.messages=1000"])
    }

    override func tearDownWithError() throws {
        unmountAll()
        stopRelay()
        broker?.terminate()
        broker?.waitUntilExit()
        try super.tearDownWithError()
    }

    /// Forwards 127.0.0.1:relayPort to the broker; `stopRelay` cuts every connection at once.
    func startRelay() {
        XCTAssertTrue(BrokerRig.startRelay(listen: relayPort, target: brokerPort), "the relay did not start")
    }

    func stopRelay() { BrokerRig.stopRelay(listen: relayPort) }

    /// A program that writes one line and reports what close() said (the shell's `>` ignores it).
    func writeLine(_ line: String) -> String {
        "python3 -c \"import os, sys; fd = os.open('p', os.O_WRONLY); os.write(fd, b'\(line)\\\\n'); os.close(fd)\""
    }

    func testReadersWaitAndWritesRecoverAfterAShortOutage() {
        ok("seq 1 3 > p")
        ok("cat p > \"$ROOT/reader.out\" 2>&1 & echo $! > \"$ROOT/reader.pid\"")
        eventually("grep -qx 3 \"$ROOT/reader.out\"")
        stopRelay()
        // A write during the outage: its close waits for the broker, then succeeds.
        ok("(\(writeLine("during")) && echo closed-ok || echo close-failed) > \"$ROOT/writer.out\" 2>&1 &")
        sleep(2)
        XCTAssertEqual(ok("cat \"$ROOT/writer.out\""), "", "close returned before the broker acknowledged")
        startRelay()
        eventually("grep -qx closed-ok \"$ROOT/writer.out\"", seconds: 20)
        ok(writeLine("after"))
        eventually("grep -qx after \"$ROOT/reader.out\"", seconds: 20)
        XCTAssertEqual(ok("cat \"$ROOT/reader.out\""), "1\n2\n3\nduring\nafter\n", "the reader resumed without gaps or repeats")
        ok("kill $(cat \"$ROOT/reader.pid\")")
    }

    func testWriteWhoseMessagesWereNeverAcknowledgedFailsAtClose() {
        ok("echo before > p")
        stopRelay()
        // (The shell's `>` ignores what close() says: write from a program that checks it.)
        let write = writeLine
        let r = sh(write("lost"), timeout: 60)
        XCTAssertNotEqual(r.status, 0, "close must report that the message is not durable")
        XCTAssertTrue(r.stderr.contains("Input/output error"), r.stderr)
        XCTAssertTrue(log.contains("pipe p: messages not acknowledged by the brokers (127.0.0.1:\(relayPort))"), log)
        startRelay()
        eventually(write("back") + " 2>/dev/null", seconds: 30)
        // Writes recover once the broker is back (a new producer replaces one the brokers fenced). The exact
        // content is not checked here: after such an epoch bump the test broker (tansu 0.6) has been seen
        // to store the failed batches with an earlier batch's payload, which is the broker's doing.
        let out = ok("cat .drain/p", timeout: 30)
        XCTAssertTrue(out.hasPrefix("before\n") && out.hasSuffix("back\n"), out)
        XCTAssertFalse(out.contains("lost"), "a message reported as failed was stored")
    }

    /// While the broker is away, requests that wait for it (the first open of a pipe for reading, a close
    /// waiting for acknowledgements, a reset) end at once on a signal: each answers EINTR, and a process
    /// killed in one of them is gone at once rather than when the broker's timeout ends the wait. A create
    /// does not wait: its topic is made once the broker is back.
    func testRequestsWaitingForTheBrokerEndOnASignal() {
        ok("mkfifo never-read; echo before > p")
        stopRelay()
        XCTAssertEqual(ok("timeout 2 mkfifo made-during && ls made-during"), "made-during\n")
        for command in ["cat never-read", "sh -c 'echo during > p'", "truncate -s 0 p"] {
            let r = interrupted(command)
            XCTAssertEqual(r.status, 124, "\(command) did not end by the signal")
            XCTAssertLessThanOrEqual(r.tenths, 20, "\(command) took \(r.tenths) tenths of a second to end")
        }
        // A writer killed while its close waits.
        let killed = ok("""
        start=$(date +%s%N)
        sh -c 'echo killed > p' & writer=$!
        sleep 0.5; kill -KILL $writer; wait $writer
        echo "$? $(( ($(date +%s%N) - start) / 100000000 ))"
        """, timeout: 60).split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        XCTAssertEqual(killed.first, 137, "the writer did not end by SIGKILL: \(killed)")
        XCTAssertLessThanOrEqual(killed.last ?? 99, 20, "the killed writer took long to end: \(killed)")
        startRelay()
        // The mount serves on once the broker is back, and the pipe made meanwhile is there and works.
        eventually("[ \"$(tail -n 1 .drain/p)\" = after ] || { echo after > p; false; }", seconds: 30)
        ok("echo made > made-during", timeout: 60)
        XCTAssertEqual(ok("cat .drain/made-during", timeout: 30), "made\n")
    }

    /// The broker freezes (SIGSTOP: connections stay open, nothing answers) while two dozen pipes are being
    /// made: the creates return, and `ls` and `stat` answer within a second each, instead of waiting behind
    /// the creates for the directory's lock, which the kernel holds while a create is out. Once the broker
    /// goes on, every pipe is there on the brokers (a second mount lists them).
    func testListingAnswersWhileTheBrokerIsFrozenAndCreatesWait() throws {
        ok("mkfifo p; echo a > p")
        guard let broker else { return XCTFail("no broker") }
        XCTAssertFalse(BrokerRig.signalBroker(broker, SIGSTOP).isEmpty, "no broker process to freeze")
        defer { BrokerRig.signalBroker(broker, SIGCONT) }
        let out = ok("""
        for k in $(seq 24); do timeout 20 mkfifo made$k & done; wait
        ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
        start=$(date +%s%N); n=$(timeout 5 ls | wc -l); t=$(ms $start)
        [ $t -lt 1000 ] && echo "ls $n" || echo "ls took $t ms"
        start=$(date +%s%N); size=$(timeout 5 stat -c %s p); t=$(ms $start)
        [ $t -lt 1000 ] && echo "stat answered" || echo "stat took $t ms"
        """, timeout: 60)
        XCTAssertEqual(out, "ls 25\nstat answered\n")
        BrokerRig.signalBroker(broker, SIGCONT)
        let other = root + "/other"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        try mount(["--brokers", "127.0.0.1:\(relayPort)"], at: other)
        eventually("[ $(ls \"$ROOT/other\" | grep -c '^made') = 24 ]", seconds: 30)
    }

    /// `rm` does not wait for a frozen broker either (the kernel holds the directory's lock while it is out):
    /// the pipes go at once, `ls` answers meanwhile, and the topics are deleted once the broker answers.
    func testRemovalsAnswerWhileTheBrokerIsFrozenAndTopicsGoLater() throws {
        ok("for k in $(seq 12); do mkfifo gone$k; done; mkfifo kept")
        guard let broker else { return XCTFail("no broker") }
        let other = root + "/other"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        try mount(["--brokers", "127.0.0.1:\(relayPort)"], at: other)
        eventually("[ $(ls \"$ROOT/other\" | grep -c '^gone') = 12 ]", seconds: 30)
        XCTAssertFalse(BrokerRig.signalBroker(broker, SIGSTOP).isEmpty, "no broker process to freeze")
        defer { BrokerRig.signalBroker(broker, SIGCONT) }
        let out = ok("""
        ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
        start=$(date +%s%N); for k in $(seq 12); do timeout 20 rm gone$k & done; wait; t=$(ms $start)
        [ $t -lt 2000 ] && echo "rm answered" || echo "rm took $t ms"
        start=$(date +%s%N); names=$(timeout 5 ls); t=$(ms $start)
        [ $t -lt 1000 ] && echo "ls: $names" || echo "ls took $t ms"
        """, timeout: 60)
        XCTAssertEqual(out, "rm answered\nls: kept\n")
        BrokerRig.signalBroker(broker, SIGCONT)
        eventually("[ $(ls \"$ROOT/other\" | grep -c '^gone') = 0 ]", seconds: 30)
        XCTAssertEqual(ok("ls"), "kept\n", "a listing while the deletions were under way brought none back")
    }

    /// While the broker is away librdkafka's local queue fills: writes then wait without holding a FUSE
    /// thread (more writers than the mount has threads, and it still answers), a signal ends such a write at
    /// once, and once the broker is back the writers that were not stopped finish with every line in order.
    func testWritesWaitingForRoomHoldNoThreadAndEndOnASignal() {
        ok("mkfifo w solo; for k in $(seq 20); do mkfifo many$k; done")
        stopRelay()
        ok("seq 1 20000 > w 2>/dev/null & echo $! > \"$ROOT/w.pid\"")
        ok("for k in $(seq 20); do seq 1 5000 > many$k 2>/dev/null & done; echo started")
        sleep(1)
        // 21 writers wait for room; the mount has 16 threads, and answers.
        let r = sh("timeout 5 ls | wc -l; timeout 5 stat -c %s w", timeout: 20)
        XCTAssertEqual(r.stdout, "22\n0\n", "the mount did not answer while writers waited: \(r.stderr)")
        // A writer of its own pipe (another writer of the same pipe would wait for the file's lock, which the
        // kernel holds while a write is out, before its write even reaches the daemon).
        let solo = interrupted("sh -c 'seq 1 5000 > solo'", after: "1")
        XCTAssertEqual(solo.status, 124, "the waiting write did not end by the signal")
        XCTAssertLessThanOrEqual(solo.tenths, 25, "the waiting write took \(solo.tenths) tenths of a second to end")
        startRelay()
        eventually("! kill -0 $(cat \"$ROOT/w.pid\") 2>/dev/null", seconds: 60)
        XCTAssertEqual(ok("cat .drain/w | cmp - <(seq 1 20000) && echo same", timeout: 60), "same\n")
        eventually("cat .drain/many7 | cmp -s - <(seq 1 5000)", seconds: 60)
    }
}
