import XCTest

/// Readers at the end of a pipe: blocking, interrupts, O_NONBLOCK and poll.
final class BlockingTests: MountTestCase {
    func testReaderBlocksAtTheEndUntilAPushArrives() {
        ok("echo first > p")
        let out = ok("""
        cat p > "$ROOT/out" & reader=$!
        sleep 0.5
        cat "$ROOT/out"; echo ---
        echo second > p
        for i in $(seq 100); do grep -q second "$ROOT/out" && break; sleep 0.05; done
        kill $reader; wait $reader || true
        cat "$ROOT/out"
        """, timeout: 20)
        XCTAssertEqual(out, "first\n---\nfirst\nsecond\n")
    }

    func testPushesReachABlockedReaderInOrder() {
        let out = ok("""
        mkfifo p
        head -n 500 p > "$ROOT/out" & reader=$!
        sleep 0.3
        for i in $(seq 1 500); do echo $i > p; done
        wait $reader
        cmp "$ROOT/out" <(seq 1 500) && echo ordered
        """, timeout: 60)
        XCTAssertEqual(out, "ordered\n")
    }

    func testSignalInterruptsABlockedReadWithEINTR() {
        ok("mkfifo p")
        let out = ok("""
        python3 - <<'PY'
        import os, signal, time, threading
        class Woken(Exception): pass
        def handler(*_): raise Woken()
        signal.signal(signal.SIGUSR1, handler)
        fd = os.open("p", os.O_RDONLY)
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGUSR1)).start()
        start = time.time()
        try:
            os.read(fd, 100)
            print("read returned")
        except Woken:
            print("interrupted after %.1fs" % (time.time() - start))
        # The handle still works after the interrupted read.
        os.system("echo after > p")
        print(os.read(fd, 100).decode().strip())
        PY
        """, timeout: 20)
        XCTAssertEqual(out, "interrupted after 0.5s\nafter\n")
    }

    func testCtrlCEndsABlockedCat() {
        ok("mkfifo p")
        // SIGINT as a terminal's Ctrl-C delivers it; cat must end at once, not hang in the kernel.
        let r = sh("""
        start=$(date +%s%N)
        timeout -s INT 0.5 cat p; status=$?
        echo "$status $(( ($(date +%s%N) - start) / 100000000 ))"
        """, timeout: 20)
        let parts = r.stdout.split(separator: " ")
        XCTAssertEqual(parts.first, "124")
        XCTAssertLessThanOrEqual(Int(parts.last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "99") ?? 99, 20)
    }

    func testHundredsOfInterruptedReadersLeaveNothingBehind() {
        ok("mkfifo p")
        let storm = """
        for i in $(seq 1 200); do timeout -s INT 0.05 cat p >/dev/null & done
        wait
        true
        """
        ok(storm, timeout: 60)   // the first round may allocate what the daemon keeps for good
        let before = ok("ls /proc/\(daemonPID)/task | wc -l; ls /proc/\(daemonPID)/fd | wc -l")
        ok(storm, timeout: 60)
        let after = ok("ls /proc/\(daemonPID)/task | wc -l; ls /proc/\(daemonPID)/fd | wc -l")
        let b = before.split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let a = after.split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        XCTAssertEqual(b.count, 2); XCTAssertEqual(a.count, 2)
        if a.count == 2 && b.count == 2 {
            XCTAssertLessThanOrEqual(a[0], max(b[0], 24), "threads grew: \(b) -> \(a)")
            XCTAssertEqual(a[1], b[1], "file descriptors grew: \(b) -> \(a)")
        }
        ok("echo still > p")
        XCTAssertEqual(ok("cat .drain/p"), "still\n")
    }

    func testNonBlockingReadGetsEAGAINAtTheEnd() {
        let out = ok("""
        echo one > p
        python3 - <<'PY'
        import os
        fd = os.open("p", os.O_RDONLY | os.O_NONBLOCK)
        print(os.read(fd, 100).decode().strip())
        try:
            os.read(fd, 100); print("no EAGAIN")
        except BlockingIOError:
            print("EAGAIN")
        PY
        """, timeout: 20)
        XCTAssertEqual(out, "one\nEAGAIN\n")
    }

    func testPollReportsReadinessTruly() {
        let out = ok("""
        mkfifo p
        python3 - <<'PY'
        import os, select, selectors, threading
        fd = os.open("p", os.O_RDONLY | os.O_NONBLOCK)
        p = select.poll(); p.register(fd, select.POLLIN)
        print("empty:", p.poll(300))
        threading.Timer(0.3, lambda: os.system("echo x > p")).start()
        print("after push:", [e & select.POLLIN for _, e in p.poll(5000)])
        print(os.read(fd, 100).decode().strip())
        print("drained:", p.poll(200))
        ep = select.epoll(); ep.register(fd, select.EPOLLIN)
        threading.Timer(0.3, lambda: os.system("echo y > p")).start()
        print("epoll:", [e & select.EPOLLIN for _, e in ep.poll(5)])
        r, _, _ = select.select([fd], [], [], 5)
        print("select:", len(r))
        PY
        """, timeout: 30)
        XCTAssertEqual(out, "empty: []\nafter push: [1]\nx\ndrained: []\nepoll: [1]\nselect: 1\n")
    }
}
