import XCTest

/// The daemon's request loop (Sources/CFuseLoop/fuse_serve.c): after a request, the reading worker keeps
/// asking for the next one for `busy_poll_us` at idle priority, then sleeps; `busy_poll_us=0` never spins.
final class RequestLoopTests: MountTestCase {
    /// One `TCGETS` round trip per line: bash's `read` asks whether its input is a terminal on every line.
    /// Each count of lines has a pipe of its own, so that a loop reads only its own lines.
    private func readLoop(_ lines: Int = 3000) -> String {
        """
        python3 -c 'import sys; sys.stdout.write("".join("%079d\\n" % i for i in range(\(lines))))' > lines\(lines)
        n=0; while IFS= read -r l; do n=$((n + 1)); done < .drain/lines\(lines); echo "$n"
        """
    }

    /// CPU time the daemon used over two quiet seconds, in clock ticks.
    private func idleTicks() -> Int {
        let out = ok("""
        ticks() { awk '{ print $14 + $15 }' /proc/\(daemonPID)/stat; }
        sleep 0.5; a=$(ticks); sleep 2; b=$(ticks); echo $((b - a))
        """, timeout: 30)
        return Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Policies the daemon's threads had while the read loop ran, sampled from /proc: 5 is SCHED_IDLE.
    private func policiesDuringReadLoop() -> Set<String> {
        let out = ok("""
        { \(readLoop(20000))
        } > "$ROOT/count" &
        loop=$!
        # The policy is the 41st field; the thread's name before it may hold spaces, so count from its ")".
        while kill -0 $loop 2>/dev/null; do
          sed 's/.*) //' /proc/\(daemonPID)/task/*/stat 2>/dev/null | awk '{ print $39 }'
        done | sort -u
        wait $loop
        [ "$(cat "$ROOT/count")" = 20000 ] || { echo "the loop read $(cat "$ROOT/count") lines" >&2; exit 1; }
        """, timeout: 120)
        return Set(out.split(separator: "\n").map(String.init))
    }

    func testAQuietDaemonSpendsNoCPU() {
        XCTAssertEqual(ok(readLoop(), timeout: 120), "3000\n")
        let ticks = idleTicks()
        XCTAssertGreaterThanOrEqual(ticks, 0)
        // A reader that never stopped spinning would use a whole CPU: about 200 ticks in two seconds.
        XCTAssertLessThan(ticks, 20, "the daemon used \(ticks) ticks of CPU in two quiet seconds")
    }

    func testTheReaderWaitsForTheNextRequestAtIdlePriority() {
        let policies = policiesDuringReadLoop()
        XCTAssertTrue(policies.contains("5"), "no thread of the daemon was SCHED_IDLE during the loop: \(policies)")
    }

    func testBusyPollingCanBeTurnedOff() throws {
        unmountAll()
        try mount(["-o", "busy_poll_us=0"])
        XCTAssertEqual(ok(readLoop(), timeout: 120), "3000\n")
        let policies = policiesDuringReadLoop()
        XCTAssertFalse(policies.contains("5"), "a thread was SCHED_IDLE with busy_poll_us=0: \(policies)")
        XCTAssertLessThan(idleTicks(), 20)
    }

    func testAnOutOfRangeBusyPollIsRefused() {
        let r = sh("\"$DNPIPES\" mount \"$ROOT/m2\" --data-dir \"$ROOT/d2\" -o busy_poll_us=5000")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue((r.stdout + r.stderr).contains("busy_poll_us needs microseconds, from 0 to 1000"), r.stdout + r.stderr)
    }

    /// Many clients at once: the reader hands its turn on when requests queue up, so several workers read and
    /// answer side by side, and every client gets all of its bytes.
    func testManyConcurrentReadersAndWritersAreAllServed() {
        let out = ok(#"""
        python3 -c 'import sys; sys.stdout.write("".join("%d\n" % i for i in range(100000)))' > "$ROOT/src"
        cat "$ROOT/src" > p
        for i in $(seq 24); do cmp .drain/p "$ROOT/src" > "$ROOT/cmp$i" 2>&1 & done
        for i in $(seq 8); do seq 1000 > "w$i" & done
        wait
        cat "$ROOT"/cmp*
        for i in $(seq 8); do cmp ".drain/w$i" <(seq 1000) || echo "w$i differs"; done
        echo done
        """#, timeout: 120)
        XCTAssertEqual(out, "done\n")
    }
}
