import DNPipesTestSupport
import Foundation
import XCTest

/// The daemon is told to stop (SIGTERM, as `kill` or a service manager does) while a writer has messages in
/// flight and is closing. Its close must return within a bounded time: 0 only if every line is stored (a
/// second mount reads them all), else an error, never a hang. With the broker frozen (SIGSTOP) at that
/// moment, nothing can be acknowledged: a close already out then fails with EIO once the daemon's wait for
/// the brokers is over, and the log names the pipe. (A close that comes after the daemon stopped serving
/// gets the kernel's answer, ECONNABORTED.)
final class KafkaShutdownTests: RelayedBrokerTestCase {
    /// How many lines the writer pushes: enough that many are still in flight when it closes.
    let lines = 50_000

    override func setUpWithError() throws {
        try super.setUpWithError()
        XCTAssertTrue(BrokerRig.startRelay(listen: relayPort, target: brokerPort), "the relay did not start")
        try mountOwnBroker()
    }

    override func tearDownWithError() throws {
        if (testRun?.failureCount ?? 0) > 0 {
            print("KafkaShutdownTests: the daemons' log ends with:\n\(log.suffix(4000))")
        }
        try super.tearDownWithError()
    }

    func mountOwnBroker() throws {
        try mount(["--brokers", "127.0.0.1:\(relayPort)", "-o", "kafka.message.timeout.ms=60000"])
    }

    /// A writer that pushes `lines` lines on one handle, then signals the daemon and closes: with `closeFirst`
    /// the close starts first (in a thread) and the signal follows after `delay` seconds, else the other way
    /// round. Returns what close() said and how many seconds after the signal it returned.
    /// With `touchAfter`, the writer lists the mount's directory just after the signal (as any other use of the
    /// mount would): the daemon stops serving once its threads take their next request, and a close already
    /// out does not count as one.
    func writeAndStopTheDaemon(closeFirst: Bool, delay: Double, touchAfter: Bool = false) -> (result: String, seconds: Double) {
        let pid = daemonPID
        guard !pid.isEmpty else { XCTFail("no daemon pid"); return ("", 0) }
        let out = ok("""
        timeout 90 python3 - <<'PY'
        import errno, os, signal, threading, time
        directory = os.open(".", os.O_RDONLY)
        fd = os.open("p", os.O_WRONLY)
        block = 1000
        for start in range(1, \(lines) + 1, block):
            os.write(fd, "".join("%d\\n" % n for n in range(start, min(start + block, \(lines) + 1))).encode())
        said = []
        def close():
            try:
                os.close(fd); said.append("ok")
            except OSError as e:
                said.append(errno.errorcode.get(e.errno, str(e.errno)))
        closer = threading.Thread(target=close, daemon=True)
        close_first = \(closeFirst ? "True" : "False")
        if close_first:
            closer.start(); time.sleep(\(delay))
        signalled = time.monotonic()
        os.kill(\(pid), signal.SIGTERM)
        if not close_first:
            time.sleep(\(delay)); closer.start()
        if \(touchAfter ? "True" : "False"):
            time.sleep(0.2)
            try:
                os.listdir(directory)
            except OSError:
                pass
        closer.join(60)
        print("%s %.1f" % (said[0] if said else "hung", time.monotonic() - signalled))
        PY
        """, timeout: 120)
        let fields = out.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        XCTAssertEqual(fields.count, 2, "the writer said: \(out)")
        // The daemon goes too, within its bound: nothing it does at shutdown waits for ever.
        eventually("! kill -0 \(pid) 2>/dev/null", seconds: 30)
        return (fields.first ?? "", fields.count == 2 ? Double(fields[1]) ?? 99 : 99)
    }

    func testACloseDuringShutdownSucceedsWithEveryLineStoredOrFails() throws {
        ok("mkfifo p")
        var stored = 0
        // The signal just before the close, and just after it (with the daemon then taking a request, so that
        // it stops while the close waits for its messages' acknowledgements).
        for (round, (closeFirst, delay)) in [(false, 0.0), (false, 0.3), (true, 0.0), (true, 0.05)].enumerated() {
            let (result, seconds) = writeAndStopTheDaemon(closeFirst: closeFirst, delay: delay, touchAfter: closeFirst)
            XCTAssertNotEqual(result, "hung", "round \(round): the close never returned")
            XCTAssertLessThan(seconds, 20, "round \(round): the close took \(seconds) s after the signal")
            if result == "EIO" {
                XCTAssertTrue(log.contains("pipe p: "), "round \(round): a failed close with no log line naming the pipe:\n\(log)")
            }
            try mountOwnBroker()
            let count = ok("timeout 60 cat .drain/p | wc -l", timeout: 90).trimmingCharacters(in: .whitespacesAndNewlines)
            if result == "ok" {
                stored += lines
                // Every line of every round whose close succeeded, in order (a failed round's lines may or may not be there).
                XCTAssertGreaterThanOrEqual(Int(count) ?? 0, stored, "round \(round): close returned 0 but lines are missing")
                let tail = ok("timeout 60 tail -n \(lines) .drain/p | md5sum", timeout: 90)
                XCTAssertEqual(tail, ok("seq 1 \(lines) | md5sum"), "round \(round): the last round's lines are not all there, in order")
            } else {
                stored = Int(count) ?? stored
            }
            print("round \(round): close \(result) after \(seconds) s, \(count) lines stored")
        }
    }

    func testACloseWaitingForAFrozenBrokerFailsWithinTheBound() throws {
        try closeWaitingForAFrozenBroker(touchAfter: true)
    }

    /// Nothing else uses the mount after the signal: the waiting close alone must not keep the daemon serving
    /// until librdkafka gives up on its messages (here a minute).
    func testACloseWaitingForAFrozenBrokerDoesNotHoldTheUnmount() throws {
        try closeWaitingForAFrozenBroker(touchAfter: false)
    }

    private func closeWaitingForAFrozenBroker(touchAfter: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        ok("mkfifo p; echo before > p")
        guard let broker else { return XCTFail("no broker") }
        XCTAssertFalse(BrokerRig.signalBroker(broker, SIGSTOP).isEmpty, "no broker process under \(broker.processIdentifier)")
        defer { BrokerRig.signalBroker(broker, SIGCONT) }
        // The close is out, waiting for acknowledgements that cannot come, when the signal arrives.
        let (result, seconds) = writeAndStopTheDaemon(closeFirst: true, delay: 1, touchAfter: touchAfter)
        XCTAssertEqual(result, "EIO", "the close must fail: the frozen broker acknowledged nothing", file: file, line: line)
        XCTAssertLessThan(seconds, 12, "the close took \(seconds) s after the signal (the daemon waits 5 s)", file: file, line: line)
        XCTAssertTrue(log.contains("pipe p: ") && log.contains("messages not acknowledged by the brokers (127.0.0.1:\(relayPort)) when the mount stopped"),
                      "no log line naming the pipe and why:\n\(log.suffix(3000))")
    }
}
