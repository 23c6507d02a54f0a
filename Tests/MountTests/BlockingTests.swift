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
        let r = interrupted("cat p")
        XCTAssertEqual(r.status, 124)
        XCTAssertLessThanOrEqual(r.tenths, 20)
    }

    /// A blocked read holds no thread and an interrupted one leaves nothing: 200 readers wait at once, then
    /// all are ended by a signal (SIGTERM; background jobs of a script ignore SIGINT), twice. Between the
    /// rounds the daemon's memory may not grow by more than 4 MiB (20 KiB a reader). Its threads may move
    /// only within its FUSE worker pool (16 workers, which start and end with load), far below one per
    /// reader. Its descriptors must not move, but for a Kafka client's broker connections, which
    /// librdkafka opens and closes by itself: those stay within a few whatever the number of readers.
    func testHundredsOfInterruptedReadersLeaveNothingBehind() {
        ok("mkfifo p")
        let pool = 16
        let usage = """
        awk '/^VmRSS:/ { print $2 }' /proc/\(daemonPID)/status
        ls /proc/\(daemonPID)/task | wc -l
        find /proc/\(daemonPID)/fd -mindepth 1 -printf '%l\\n' | grep -vc '^socket:' || true
        find /proc/\(daemonPID)/fd -mindepth 1 -printf '%l\\n' | grep -c '^socket:' || true
        """
        let storm = """
        pids=()
        for i in $(seq 1 200); do cat p >/dev/null & pids+=($!); done
        # Every reader is in its read, waiting for the daemon's answer (there is nothing to read).
        for i in $(seq 200); do
          n=0; for pid in "${pids[@]}"; do grep -q request_wait_answer /proc/$pid/wchan 2>/dev/null && n=$((n + 1)); done
          [ $n -eq 200 ] && break; sleep 0.1
        done
        echo "$n blocked"
        \(usage)
        kill -TERM "${pids[@]}"
        wait
        true
        """
        func numbers(_ s: String) -> [Int] { s.split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
        ok(storm, timeout: 90)   // the first round may allocate what the daemon keeps for good
        let before = numbers(ok(usage))
        let during = numbers(ok(storm, timeout: 90).replacingOccurrences(of: " blocked", with: ""))
        let after = numbers(ok(usage))
        print("interrupted readers (\(Self.backend)): rss KiB, threads, fds, sockets \(before) -> blocked, then the same \(during) -> \(after)")
        // before and after: memory, threads, descriptors, sockets; during: blocked readers, then the same.
        XCTAssertEqual(before.count, 4); XCTAssertEqual(during.count, 5); XCTAssertEqual(after.count, 4)
        if before.count == 4 && during.count == 5 && after.count == 4 {
            XCTAssertEqual(during[0], 200, "not every reader was blocked in its read")
            XCTAssertLessThan(after[0] - before[0], 4096, "resident memory grew (KiB): \(before) -> \(after)")
            XCTAssertLessThanOrEqual(during[2], before[1] + pool, "threads while 200 reads wait: \(before) -> \(during)")
            XCTAssertLessThanOrEqual(after[1], before[1] + pool, "threads grew: \(before) -> \(after)")
            XCTAssertEqual(during[3], before[2], "file descriptors moved while 200 reads wait: \(before) -> \(during)")
            XCTAssertEqual(after[2], before[2], "file descriptors grew: \(before) -> \(after)")
            let connections = isKafka ? 6 : 0
            XCTAssertLessThanOrEqual(max(during[4], after[3]), connections, "sockets: \(before) -> \(during) -> \(after)")
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
