import XCTest

/// A daemon killed with SIGKILL at random moments while writers push: after a remount every acknowledged
/// message is there exactly once and in order, and nothing is torn.
///
/// A line counts as acknowledged only once the program that wrote it exited 0. The writers are the coreutils
/// `echo` and `printf`, which report a failed close() of their output in their exit status (the shell's
/// builtins ignore errors of the close that ends a redirection, and close() is where a pipe reports that its
/// messages are durable).
final class CrashTests: MountTestCase {
    /// Many kill points on one data directory, so recovery runs again and again on what the previous
    /// recoveries left.
    func testEveryAcknowledgedLineSurvivesSIGKILLAtRandomMoments() throws {
        try crashLoop(iterations: 15, delays: 50...400)
    }

    func testCrashedDaemonLeavesENOTCONNAndMountCleansUpAndServes() throws {
        ok("seq 1 3 > p")
        let pid = daemonPID
        XCTAssertFalse(pid.isEmpty, "no pid file for the daemon")
        shell("kill -KILL \(pid)")
        waitUntilDead(pid)
        // Not from inside the mount: its directory itself is what answers ENOTCONN.
        // (Errors on either stream: a shell prints a failed redirection's error itself.)
        let ls = shell("{ ls \(quote(mnt)); } 2>&1")
        XCTAssertNotEqual(ls.status, 0, "ls of a dead mount succeeded: \(ls.stdout)")
        XCTAssertTrue(ls.stdout.contains("Transport endpoint is not connected"), ls.stdout + ls.stderr)
        let push = shell("{ echo x > \(quote(mnt))/p; } 2>&1")
        XCTAssertNotEqual(push.status, 0)
        XCTAssertTrue(push.stdout.contains("Transport endpoint is not connected"), push.stdout + push.stderr)
        XCTAssertTrue(shell("cat /proc/self/mounts").stdout.contains(" \(mnt) "), "the dead mount is still listed")
        sleep(2)   // let what the kernel cached of the mount root expire (see the next test)

        let again = shell(([dnpipesBinary, "mount", mnt, "--data-dir", data] + backendArguments).map(quote).joined(separator: " "),
                          timeout: 60)
        XCTAssertEqual(again.status, 0, again.stdout + again.stderr)
        XCTAssertTrue(again.stdout.contains("mounted \(mnt)"), again.stdout)
        XCTAssertTrue(log.contains("is a dead mount of a daemon that died; detaching it"), log)
        XCTAssertEqual(mountCount, 1, "exactly one mount on the mount point")
        XCTAssertNotEqual(daemonPID, pid, "the pid file names the new daemon")
        ok("echo 4 >> p")
        XCTAssertEqual(ok("cat .drain/p"), "1\n2\n3\n4\n")
        XCTAssertEqual(ok("ls"), "p\n")
        // Unmounted, the mount point is a plain directory again.
        XCTAssertEqual(shell("\(quote(dnpipesBinary)) unmount \(quote(mnt))").status, 0)
        XCTAssertEqual(mountCount, 0)
        let after = shell("{ ls -A \(quote(mnt)); } 2>&1")
        XCTAssertEqual(after.status, 0, after.stdout)
    }

    /// A shell sitting in the mount when the daemon dies, and a mount made again at once: the dead mount must
    /// be detached, not hidden under the new one (where it would answer ENOTCONN again after an unmount).
    func testRemountRightAfterACrashDetachesTheDeadMount() throws {
        ok("echo kept > p")
        let pid = daemonPID
        XCTAssertFalse(pid.isEmpty, "no pid file for the daemon")
        let r = sh("""
        cd "$MNT"; stat . > /dev/null
        kill -KILL \(pid)
        for i in $(seq 100); do test -e /proc/\(pid) && ! grep -q '^State:.*Z' /proc/\(pid)/status || break; sleep 0.01; done
        cd /
        "$DNPIPES" mount "$MNT" --data-dir "$DATA" $BACKEND
        """, timeout: 60)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertEqual(mountCount, 1, "the dead mount is still there under the new one:\n\(shell("grep \(quote(mnt)) /proc/self/mounts").stdout)")
        XCTAssertEqual(ok("cat .drain/p"), "kept\n")
        XCTAssertEqual(shell("\(quote(dnpipesBinary)) unmount \(quote(mnt))").status, 0)
        let after = shell("{ ls -A \(quote(mnt)); } 2>&1")
        XCTAssertEqual(after.status, 0, "after unmount the mount point answers: \(after.stdout)")
        XCTAssertEqual(mountCount, 0)
    }

    /// Two crashes in a row, the first remount made at once from a shell in the mount: the second mount
    /// must still clean up every dead mount and serve.
    func testMountAfterTwoCrashesInARowServes() throws {
        ok("echo kept > p")
        for round in 1...2 {
            let pid = daemonPID
            XCTAssertFalse(pid.isEmpty, "round \(round): no pid file for the daemon")
            let r = sh("""
            cd "$MNT"; stat . > /dev/null
            kill -KILL \(pid)
            cd /
            for i in $(seq 100); do test -e /proc/\(pid) && ! grep -q '^State:.*Z' /proc/\(pid)/status || break; sleep 0.01; done
            \(round == 2 ? "sleep 2" : "")
            { "$DNPIPES" mount "$MNT" --data-dir "$DATA" $BACKEND; } 2>&1
            """, timeout: 60)
            XCTAssertEqual(r.status, 0, "round \(round): \(r.stdout)")
        }
        XCTAssertEqual(mountCount, 1)
        XCTAssertEqual(ok("cat .drain/p"), "kept\n")
    }
}

/// The same on Kafka: what the brokers acknowledged before the kill is there once, in order, after a remount.
final class CrashTestsOnKafka: MountTestCase {
    override class var backend: Backend { .kafka }

    func testEveryAcknowledgedLineSurvivesSIGKILL() throws {
        try crashLoop(iterations: 5, delays: 500...2500)
    }
}

extension MountTestCase {
    /// How many mounts sit on the mount point.
    fileprivate var mountCount: Int {
        let out = shell("awk -v m=\(quote(mnt)) '$2 == m' /proc/self/mounts | wc -l").stdout
        return Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Waits (bounded) until a process is gone or a zombie (nobody may reap a daemon whose parent exited).
    fileprivate func waitUntilDead(_ pid: String, file: StaticString = #filePath, line: UInt = #line) {
        guard !pid.isEmpty else { return }
        // Not in the mount point (a dead mount): plain shell, no working directory there.
        let r = shell("for i in $(seq 100); do test -e /proc/\(pid) && ! grep -q '^State:.*Z' /proc/\(pid)/status || exit 0; sleep 0.1; done; exit 1",
                      timeout: 20, file: file, line: line)
        XCTAssertEqual(r.status, 0, "daemon \(pid) still running 10 s after SIGKILL", file: file, line: line)
    }

    /// Writers push numbered lines to `p` (one line per program) and batches of 20 numbered lines to `q`,
    /// the daemon is killed with SIGKILL after a random delay, the mount is made again, and both pipes are
    /// checked. Numbers keep rising across iterations, so the whole history is checked every time.
    fileprivate func crashLoop(iterations: Int, delays: ClosedRange<Int>, file: StaticString = #filePath, line: UInt = #line) throws {
        ok("mkfifo p q")
        var nextP = 1, nextQ = 1
        var ackedP: [Int] = [], inFlightP: Set<Int> = []
        var ackedQ: [Int] = [], inFlightQ: Set<Int> = []
        for iteration in 1...iterations {
            let pid = daemonPID
            XCTAssertFalse(pid.isEmpty, "no daemon pid", file: file, line: line)
            if pid.isEmpty { return }
            let delay = Int.random(in: delays)
            let r = sh("""
            rm -f "$ROOT/acked-p" "$ROOT/acked-q" "$ROOT/inflight-p" "$ROOT/inflight-q"
            touch "$ROOT/acked-p" "$ROOT/acked-q"
            ( i=\(nextP)
              while :; do
                /bin/echo $i >> p || break
                echo $i >> "$ROOT/acked-p"
                i=$((i + 1))
              done
              echo $i > "$ROOT/inflight-p" ) 2> "$ROOT/writer-p.err" &
            writer_p=$!
            ( j=\(nextQ)
              while :; do
                /usr/bin/printf '%s\\n' $(seq $j $((j + 19))) >> q || break
                echo $j >> "$ROOT/acked-q"
                j=$((j + 20))
              done
              echo $j > "$ROOT/inflight-q" ) 2> "$ROOT/writer-q.err" &
            writer_q=$!
            sleep \(String(format: "%.3f", Double(delay) / 1000))
            kill -KILL \(pid)
            wait $writer_p $writer_q
            cat "$ROOT/inflight-p" "$ROOT/inflight-q"
            """, timeout: 60, file: file, line: line)
            let inFlight = r.lines.compactMap { Int($0) }
            XCTAssertEqual(inFlight.count, 2, "writers did not stop after the kill: \(r.stdout) \(r.stderr)", file: file, line: line)
            guard inFlight.count == 2 else { return }
            waitUntilDead(pid, file: file, line: line)
            let newAckedP = numbers(inFile: root + "/acked-p")
            let newAckedQ = numbers(inFile: root + "/acked-q").flatMap { $0..<($0 + 20) }
            ackedP += newAckedP
            ackedQ += newAckedQ
            inFlightP.insert(inFlight[0])
            inFlightQ.formUnion(inFlight[1]..<(inFlight[1] + 20))
            nextP = inFlight[0] + 1
            nextQ = inFlight[1] + 20

            let ls = shell("{ ls \(quote(mnt)); } 2>&1")
            XCTAssertTrue(ls.status != 0 && ls.stdout.contains("Transport endpoint is not connected"),
                          "iteration \(iteration): a killed daemon's mount answered: \(ls.stdout) \(ls.stderr)", file: file, line: line)
            try mount(file: file, line: line)

            let context = "iteration \(iteration) (kill after \(delay) ms, \(newAckedP.count) + \(newAckedQ.count) lines acknowledged)"
            let okP = checkRecovered(pipe: "p", acknowledged: ackedP, inFlight: inFlightP, context: context, file: file, line: line)
            let okQ = checkRecovered(pipe: "q", acknowledged: ackedQ, inFlight: inFlightQ, context: context, file: file, line: line)
            if !okP || !okQ { return }
        }
        XCTAssertGreaterThan(ackedP.count, 0, "no line was ever acknowledged: the test proved nothing", file: file, line: line)
        // The mount still serves after all that.
        ok("echo last >> p", file: file, line: line)
        XCTAssertEqual(ok("tail -n 1 .drain/p", file: file, line: line), "last\n", file: file, line: line)
    }

    private func numbers(inFile path: String) -> [Int] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int($0) }
    }

    /// Every line of the pipe is a number, strictly rising (so none twice and none torn), every acknowledged
    /// number is there, and every other number is one that was in flight at a kill.
    private func checkRecovered(pipe: String, acknowledged: [Int], inFlight: Set<Int>, context: String,
                                file: StaticString, line: UInt) -> Bool {
        let r = sh("cat .drain/\(pipe)", timeout: 60, file: file, line: line)
        XCTAssertEqual(r.status, 0, "\(context): cat .drain/\(pipe) failed: \(r.stderr)", file: file, line: line)
        var previous = 0
        var stored: Set<Int> = []
        for text in r.stdout.isEmpty ? [] : r.lines {
            guard let n = Int(text) else {
                XCTFail("\(context): pipe \(pipe) holds a torn or foreign line \(text.debugDescription)", file: file, line: line)
                return false
            }
            guard n > previous else {
                XCTFail("\(context): pipe \(pipe): \(n) after \(previous) (duplicate or out of order)", file: file, line: line)
                return false
            }
            previous = n
            stored.insert(n)
        }
        let ackedSet = Set(acknowledged)
        let missing = acknowledged.filter { !stored.contains($0) }
        XCTAssertTrue(missing.isEmpty, "\(context): pipe \(pipe) lost acknowledged lines \(missing.prefix(20))", file: file, line: line)
        let foreign = stored.subtracting(ackedSet).subtracting(inFlight)
        XCTAssertTrue(foreign.isEmpty, "\(context): pipe \(pipe) holds lines never written or written twice: \(foreign.sorted().prefix(20))",
                      file: file, line: line)
        return missing.isEmpty && foreign.isEmpty
    }
}
