import DNPipesTestSupport
import XCTest

/// A mount serving its metrics (--metrics-address), for tests that read them.
class MetricsMountTestCase: MountTestCase {
    let port = freeLoopbackPort()
    override var mountArguments: [String] { ["--metrics-address", "127.0.0.1:\(port)"] }

    /// The scraped text, fetched with Python's HTTP client within a few seconds.
    func scrape(file: StaticString = #filePath, line: UInt = #line) -> String {
        ok("python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:\(port)/metrics\", timeout=5).read().decode(), end=\"\")'",
           timeout: 20, file: file, line: line)
    }

    /// The value of one series (`name{labels}`), or nil when it is not there.
    func value(_ series: String, in text: String) -> Double? {
        for row in text.split(separator: "\n") where row.hasPrefix(series + " ") {
            return Double(row.dropFirst(series.count + 1))
        }
        return nil
    }
}

/// The Prometheus endpoint of a mount (--metrics-address): counters equal what was pushed and read.
final class MetricsTests: MetricsMountTestCase {
    func testCountersEqualWhatWasPushedAndDelivered() {
        ok("""
        seq 1 100 > p
        printf 'a\\nbb\\n' > p
        cat .drain/p > /dev/null
        cat .drain/p > /dev/null
        head -n 10 .drain/p > /dev/null
        """)
        let text = scrape()
        XCTAssertEqual(value(#"dnpipes_messages_pushed_total{pipe="p"}"#, in: text), 102, text)
        XCTAssertEqual(value(#"dnpipes_bytes_pushed_total{pipe="p"}"#, in: text), Double(292 + 5), text)
        // Two whole reads and head's, which reads ahead: at least its ten, at most the pipe.
        let delivered = value(#"dnpipes_messages_delivered_total{pipe="p"}"#, in: text) ?? -1
        XCTAssertGreaterThanOrEqual(delivered, 2 * 102 + 10, text)
        XCTAssertLessThanOrEqual(delivered, 3 * 102, text)
        XCTAssertEqual(value(#"dnpipes_pipes"#, in: text), 1, text)
        XCTAssertGreaterThanOrEqual(value(#"dnpipes_fuse_requests_total{op="write"}"#, in: text) ?? 0, 2, text)
        XCTAssertGreaterThanOrEqual(value(#"dnpipes_fuse_request_duration_seconds_count{op="read"}"#, in: text) ?? 0, 3, text)
        XCTAssertTrue(text.contains(#"# TYPE dnpipes_fuse_request_duration_seconds histogram"#), text)
    }

    func testBlockedReadersShowAndADeletedPipesSeriesGo() {
        let text = ok("""
        echo a > p; echo b > q
        cat p > /dev/null & r1=$!
        cat p > /dev/null & r2=$!
        sleep 1
        python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:\(port)/metrics", timeout=5).read().decode(), end="")'
        kill $r1 $r2; wait $r1 $r2 2>/dev/null
        exit 0
        """, timeout: 30)
        XCTAssertEqual(value(#"dnpipes_readers{pipe="p"}"#, in: text), 2, text)
        XCTAssertEqual(value(#"dnpipes_readers{pipe="q"}"#, in: text), 0, text)
        ok("rm p")
        let after = scrape()
        XCTAssertFalse(after.contains(#"pipe="p""#), after)
        XCTAssertTrue(after.contains(#"pipe="q""#), after)
    }

    /// A group's backlog: what no member of it has yet, per pipe and group read on the mount; a forgotten
    /// group's series goes.
    func testGroupBacklogIsAGauge() {
        ok("seq 1 6 > jobs")
        XCTAssertEqual(ok("timeout 10 head -n 2 .take/workers/jobs"), "1\n2\n")
        let series = #"dnpipes_group_backlog_messages{pipe="jobs",group="workers"}"#
        // The taker's member gives back what it claimed ahead a second after its last reader closed.
        eventually("python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:\(port)/metrics\", timeout=5).read().decode())' | grep -qx '\(series) 4.0\\|\(series) 4'")
        ok("rmdir .group/workers")
        XCTAssertFalse(scrape().contains("dnpipes_group_backlog_messages"), "the forgotten group's series went")
    }

    func testErrorsAreCountedByOperationAndErrno() {
        sh("cat missing; mkdir d")
        let text = scrape()
        XCTAssertGreaterThanOrEqual(value(#"dnpipes_fuse_errors_total{op="lookup",errno="ENOENT"}"#, in: text) ?? 0, 1, text)
        XCTAssertEqual(value(#"dnpipes_fuse_errors_total{op="mkdir",errno="EPERM"}"#, in: text), 1, text)
    }

    /// Scrapes are answered while writers and readers keep the mount busy.
    func testEndpointAnswersWhileAPipeIsBusy() {
        let out = ok("""
        ( for i in $(seq 200); do seq 1 1000; done > p ) & w=$!
        cat p > /dev/null & r=$!
        answered=0
        for i in $(seq 10); do
          python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:\(port)/metrics", timeout=2).read()' && answered=$((answered+1))
        done
        wait $w; kill $r; wait $r 2>/dev/null
        echo $answered
        """, timeout: 120)
        XCTAssertEqual(out, "10\n")
    }

    func testOtherPathsAndATakenAddressAreRefused() {
        let code = ok("python3 -c 'import urllib.request, urllib.error\ntry:\n  urllib.request.urlopen(\"http://127.0.0.1:\(port)/other\", timeout=5)\nexcept urllib.error.HTTPError as e:\n  print(e.code)'")
        XCTAssertEqual(code, "404\n")
        let taken = sh("mkdir -p \"$ROOT/m2\"; \"$DNPIPES\" mount \"$ROOT/m2\" --data-dir \"$ROOT/d2\" \(backendArguments.map(quote).joined(separator: " ")) -o metrics_address=127.0.0.1:\(port)")
        XCTAssertNotEqual(taken.status, 0)
        XCTAssertTrue((taken.stdout + taken.stderr).contains("cannot listen"), taken.stdout + taken.stderr)
        let malformed = sh("mkdir -p \"$ROOT/m2\"; \"$DNPIPES\" mount \"$ROOT/m2\" --data-dir \"$ROOT/d2\" --metrics-address nowhere")
        XCTAssertNotEqual(malformed.status, 0)
        XCTAssertTrue((malformed.stdout + malformed.stderr).contains("HOST:PORT"), malformed.stdout + malformed.stderr)
    }
}
