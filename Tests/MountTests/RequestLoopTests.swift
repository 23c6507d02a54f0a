import XCTest

/// The daemon's request loop (Sources/CFuseLoop/fuse_serve.c): after a request from the process that sent
/// the one before, the reading worker keeps asking for the next one for `busy_poll_us`, then sleeps;
/// `busy_poll_us=0` never does.
final class RequestLoopTests: MountTestCase {
    /// A shell line that pushes `lines` lines of 80 bytes to `pipe`.
    private func push(_ lines: Int, to pipe: String) -> String {
        #"python3 -c 'import sys; sys.stdout.write("".join("%079d\n" % i for i in range(\#(lines))))' > \#(pipe)"#
    }

    /// One `TCGETS` round trip per line: bash's `read` asks whether its input is a terminal on every line.
    /// Each count of lines has a pipe of its own, so that a loop reads only its own lines.
    private func readLoop(_ lines: Int = 3000) -> String {
        """
        \(push(lines, to: "lines\(lines)"))
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

    /// The daemon's CPU time over a 20,000-line read loop by one process, and the loop's own time, in ticks.
    private func cpuDuringReadLoop() -> (daemon: Int, wall: Int) {
        let out = ok("""
        \(push(20000, to: "timed"))
        ticks() { awk '{ print $14 + $15 }' /proc/\(daemonPID)/stat; }
        a=$(ticks); s=$(date +%s%N)
        n=0; while IFS= read -r l; do n=$((n + 1)); done < .drain/timed
        e=$(date +%s%N); b=$(ticks)
        [ "$n" = 20000 ] || { echo "the loop read $n lines" >&2; exit 1; }
        echo "$((b - a)) $(( (e - s) / 10000000 ))"
        """, timeout: 120)
        let f = out.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        return f.count == 2 ? (f[0], f[1]) : (-1, -1)
    }

    func testAQuietDaemonSpendsNoCPU() {
        XCTAssertEqual(ok(readLoop(), timeout: 120), "3000\n")
        let ticks = idleTicks()
        XCTAssertGreaterThanOrEqual(ticks, 0)
        // A reader that never stopped spinning would use a whole CPU: about 200 ticks in two seconds.
        XCTAssertLessThan(ticks, 20, "the daemon used \(ticks) ticks of CPU in two quiet seconds")
    }

    /// A loop asks again within microseconds of each answer, so the reader is still asking when it does:
    /// the daemon is busy for about as long as the loop runs (about a third of it without polling).
    func testTheReaderKeepsAskingForACallerThatAsksAgain() {
        let (daemon, wall) = cpuDuringReadLoop()
        XCTAssertGreaterThan(wall, 0)
        XCTAssertGreaterThanOrEqual(Double(daemon), 0.75 * Double(wall), "daemon \(daemon) ticks in a loop of \(wall)")
    }

    func testBusyPollingCanBeTurnedOff() throws {
        unmountAll()
        try mount(["-o", "busy_poll_us=0"])
        let (daemon, wall) = cpuDuringReadLoop()
        XCTAssertGreaterThan(wall, 0)
        XCTAssertLessThanOrEqual(Double(daemon), 0.6 * Double(wall), "daemon \(daemon) ticks in a loop of \(wall)")
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

    /// A daemon told to stop ends at once, though nothing asks it anything: a reader is parked (it has read
    /// everything and waits for more) and a writer keeps its file open, so the detached mount stays alive and
    /// /dev/fuse never says it is gone. The script leaves the mount first, so that nothing it runs (a
    /// process started with its working directory there) sends a request that would wake the daemon.
    /// The parked reader then gets an error, not a hang.
    func testASignalledDaemonStopsWhileReadersWaitAndFilesStayOpen() {
        let pid = daemonPID
        XCTAssertFalse(pid.isEmpty, "no daemon pid")
        let out = ok("""
        cd "$ROOT"
        mkfifo "$MNT/p"
        exec 3>"$MNT/p"; echo one >&3
        cat "$MNT/p" > "$ROOT/read" 2>/dev/null & reader=$!
        for i in $(seq 100); do grep -q one "$ROOT/read" && grep -q request_wait_answer /proc/$reader/wchan && break; sleep 0.05; done
        kill -TERM \(pid)
        for i in $(seq 100); do kill -0 \(pid) 2>/dev/null || break; sleep 0.1; done
        kill -0 \(pid) 2>/dev/null && echo "the daemon still runs after 10 s"
        timeout 10 tail --pid=$reader -f /dev/null || echo "the reader still waits"
        wait $reader; echo "reader exited $?"
        cat "$ROOT/read"
        exec 3>&- 2>/dev/null
        """, timeout: 60)
        XCTAssertEqual(out, "reader exited 1\none\n")
    }

    /// A daemon signalled while it is busy (writers, readers and listings at once, so that requests queue up
    /// and the reader's turn is being passed between workers) still ends, and every client returns, with a
    /// success or an error. The clients work from inside the mount, so they keep using it once it is detached
    /// (as programs that hold its files or directories do) and fail only when the daemon is gone. Several
    /// rounds, the signal at a different moment in each.
    func testADaemonSignalledUnderLoadEndsAndEveryClientReturns() throws {
        for round in 0..<6 {
            if round > 0 { try mount() }
            let pid = daemonPID
            XCTAssertFalse(pid.isEmpty, "round \(round): no daemon pid")
            let out = ok("""
            for i in $(seq 4); do mkfifo "w$i"; done
            pids=()
            for i in $(seq 4); do (for n in $(seq 200); do seq 2000 > "w$i" || exit 0; done) 2>/dev/null & pids+=($!); done
            for i in $(seq 4); do cat "w$i" > /dev/null 2>&1 & pids+=($!); done
            for i in $(seq 4); do (while ls > /dev/null; do :; done) 2>/dev/null & pids+=($!); done
            sleep 0.\(2 + round)
            kill -TERM \(pid)
            for i in $(seq 150); do kill -0 \(pid) 2>/dev/null || break; sleep 0.1; done
            kill -0 \(pid) 2>/dev/null && echo "the daemon still runs 15 s after the signal"
            left=0
            for p in "${pids[@]}"; do timeout 15 tail --pid=$p -f /dev/null || left=$((left + 1)); done
            [ $left = 0 ] || { echo "$left clients never returned"; kill -9 "${pids[@]}" 2>/dev/null; }
            wait
            echo ended
            """, timeout: 150)
            XCTAssertEqual(out, "ended\n", "round \(round)")
            unmountAll()
        }
    }
}
