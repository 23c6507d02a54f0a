import XCTest

/// Unmodified programs on pipes, doing what their manuals say they do on files: read-write descriptors,
/// `O_NONBLOCK` switched by `fcntl`, asyncio's readers, `tail` (also `-f` and `-F` across a reset), `head`
/// and the shell's `read` leaving the rest of a shared descriptor to the next reader, errors reported at
/// `close` and `fsync`, and the size and times that `stat`, `find -newer` and `touch` see.
final class ProgramCompatibilityTests: MountTestCase {
    /// Python helpers every script of `python` starts with. A call that would wait forever is bounded by
    /// SIGALRM, so a wrong answer shows as a line of output rather than as the whole script timing out.
    static let pythonHelpers = #"""
    import asyncio, errno, fcntl, os, signal, subprocess, sys, time

    class Blocked(Exception):
        pass

    def _expired(*_):
        raise Blocked()

    signal.signal(signal.SIGALRM, _expired)

    def within(seconds, call, *args):
        """call(*args), or Blocked if it still waits after seconds."""
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return call(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def try_read(fd, seconds=3):
        """What one read of fd gets: the data's repr, an errno name, or "blocked"."""
        try:
            return repr(within(seconds, os.read, fd, 100))
        except Blocked:
            return "blocked"
        except OSError as e:
            return errno.errorcode[e.errno]

    def push_later(seconds, data, pipe="p"):
        """Another process writes data (a str) to pipe after seconds."""
        return subprocess.Popen(["bash", "-c", 'sleep "$0"; printf %s "$1" > "$2"', str(seconds), data, pipe])

    def read_after_push(fd, delay=1):
        """One read of fd while another process pushes "late" after delay: what came, and whether it waited."""
        writer = push_later(delay, "late\n")
        start = time.monotonic()
        got = try_read(fd, delay + 8)
        waited = time.monotonic() - start
        writer.wait()
        return "%s %s" % (got, "after a wait" if waited >= 0.8 * delay else "after %.2fs" % waited)

    def errname(e):
        return errno.errorcode.get(e.errno, str(e.errno))
    """#

    /// Runs a Python 3 script in the mount after `pythonHelpers`, under `timeout` (SIGKILL 5 s later), unbuffered
    /// so that what it printed before a hang is kept.
    func python(_ body: String, timeout seconds: Int = 20, file: StaticString = #filePath, line: UInt = #line) -> ShellResult {
        sh("timeout -k 5 \(seconds) python3 -u - <<'PY'\n\(Self.pythonHelpers)\n\(body)\nPY\n",
           timeout: seconds + 10, file: file, line: line)
    }

    /// A daemon that cannot finish its unmount (the fixture's wait for it is bounded) must not outlive the
    /// test: stop this test's own daemon, by its pid, if it is still running.
    override func tearDownWithError() throws {
        let pid = daemonPID, dataDir = data
        try super.tearDownWithError()
        guard !pid.isEmpty else { return }
        shell("""
        if tr '\\0' ' ' < /proc/\(pid)/cmdline 2>/dev/null | grep -qF -- "--data-dir \(dataDir) "; then kill -KILL \(pid); fi
        """, timeout: 10)
    }

    // MARK: Read-write descriptors

    func testShellReadWriteRedirectionWritesAndCloses() {
        ok("mkfifo p", timeout: 20)
        // `<>` opens O_RDWR; neither the write nor the close may wait for the read side.
        let r = sh("timeout -k 2 10 bash -c 'exec 3<>p; echo a >&3; exec 3>&-'", timeout: 20)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout + r.stderr, "")
        XCTAssertEqual(ok("timeout -k 2 10 cat .drain/p", timeout: 20), "a\n")
    }

    func testReadWriteHandleReadsFromTheOldestIncludingItsOwnWrite() {
        ok("mkfifo p", timeout: 20)
        let r = python("""
        fd = os.open("p", os.O_RDWR)
        print("wrote", os.write(fd, b"x\\n"))
        try:
            within(10, os.fsync, fd); print("fsync returned")
        except (OSError, Blocked) as e:
            print("fsync:", e)
        print(try_read(fd, 10))
        try:
            within(10, os.close, fd); print("closed")
        except (OSError, Blocked) as e:
            print("close:", e)
        """)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "wrote 2\nfsync returned\nb'x\\n'\nclosed\n")
        XCTAssertEqual(ok("timeout -k 2 10 cat .drain/p", timeout: 20), "x\n")
    }

    func testTwoReadWriteHandlesThenAPlainWriter() {
        ok("mkfifo p", timeout: 20)
        let r = python(#"""
        def read_lines(fd, n):
            # Messages may come one per read: read until n lines are in (or a read fails or blocks).
            data = b""
            while data.count(b"\n") < n:
                data += within(10, os.read, fd, 100)
            return data
        first = os.open("p", os.O_RDWR)
        second = os.open("p", os.O_RDWR)
        for fd, line in ((first, b"first\n"), (second, b"second\n")):
            os.write(fd, line)
            within(10, os.fsync, fd)
        for fd in (first, second):
            print(repr(read_lines(fd, 2)))
        for fd in (first, second):
            within(10, os.close, fd)
        print("closed")
        """#)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "b'first\\nsecond\\n'\nb'first\\nsecond\\n'\nclosed\n")
        // Nothing of those handles (a lock, a pending line) may hold up a later writer.
        let w = sh("timeout -k 2 10 bash -c 'echo z > p'", timeout: 20)
        XCTAssertEqual(w.status, 0, w.stderr)
        XCTAssertEqual(ok("timeout -k 2 10 cat .drain/p", timeout: 20), "first\nsecond\nz\n")
    }

    // MARK: O_NONBLOCK changed after open

    func testNonBlockingSetByFcntlAfterOpenGetsEAGAIN() {
        nonBlockingThenBlocking(open: """
        fd = os.open("p", os.O_RDONLY)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        """)
    }

    func testNonBlockingClearedByFcntlAfterOpenWaits() {
        nonBlockingThenBlocking(open: """
        fd = os.open("p", os.O_RDONLY | os.O_NONBLOCK)
        """)
    }

    /// Opens `p` non-blocking (as `open` says), reads (EAGAIN: the pipe is empty), clears O_NONBLOCK with
    /// fcntl and reads again: that read waits for a push made a second later.
    private func nonBlockingThenBlocking(open: String, file: StaticString = #filePath, line: UInt = #line) {
        ok("mkfifo p", timeout: 20, file: file, line: line)
        let r = python(open + """

        print("non-blocking:", try_read(fd))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        print("blocking:", read_after_push(fd))
        os.close(fd)
        """, file: file, line: line)
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        XCTAssertEqual(r.stdout, "non-blocking: EAGAIN\nblocking: b'late\\n' after a wait\n", file: file, line: line)
    }

    func testAsyncioReaderGetsEachPush() {
        ok("mkfifo p", timeout: 20)
        let r = python(#"""
        fd = os.open("p", os.O_RDONLY | os.O_NONBLOCK)
        loop = asyncio.new_event_loop()
        lines, pending = [], [b""]
        def readable():
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return  # readiness may be spurious; the loop asks again
            pending[0] += data
            while b"\n" in pending[0]:
                line, pending[0] = pending[0].split(b"\n", 1)
                lines.append(line.decode())
            if len(lines) >= 3:
                loop.stop()
        loop.add_reader(fd, readable)
        # One writer, three writes 0.2 s apart: each line arrives while the loop waits.
        writer = subprocess.Popen(["bash", "-c", "exec 4>p; for i in 1 2 3; do sleep 0.2; echo $i >&4; done"])
        loop.call_later(15, loop.stop)
        loop.run_forever()
        loop.remove_reader(fd)
        writer.wait()
        print(" ".join(lines) if lines else "nothing")
        os.close(fd)
        """#)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "1 2 3\n")
    }

    // MARK: tail

    func testTailPrintsTheLastLinesAndExits() {
        ok("printf '1\\n2\\n3\\n4\\n5\\n' > p", timeout: 20)
        let r = sh("timeout -k 2 10 tail -n 3 p", timeout: 20)
        XCTAssertEqual(r.status, 0, "tail did not end by itself: \(r.stderr)")
        XCTAssertEqual(r.stdout, "3\n4\n5\n")
    }

    func testTailFollowPrintsTheLastLinesThenEachPush() {
        ok("printf '1\\n2\\n3\\n4\\n5\\n' > p", timeout: 20)
        // tail polls (-s) a FUSE file instead of relying on inotify; timeout ends it (status 124).
        let status = ok("""
        timeout -k 2 6 tail -s 0.2 -n 2 -f p > "$ROOT/out" 2> "$ROOT/err" &
        sleep 1.5
        echo 6 > p
        wait $!; echo $?
        """, timeout: 20)
        XCTAssertEqual(status, "124\n", "tail ended before its timeout: " + ok("cat \"$ROOT/err\"", timeout: 10))
        XCTAssertEqual(ok("cat \"$ROOT/out\"", timeout: 10), "4\n5\n6\n")
    }

    func testTailFollowByNameReportsAResetAndGoesOn() {
        ok("printf 'old1\\nold2\\n' > p", timeout: 20)
        let status = ok("""
        timeout -k 2 8 tail -s 0.2 -F p > "$ROOT/out" 2> "$ROOT/err" &
        sleep 1.5
        truncate -s 0 p
        sleep 1.5
        printf 'new1\\nnew2\\n' > p
        wait $!; echo $?
        """, timeout: 20)
        XCTAssertEqual(status, "124\n")
        XCTAssertEqual(ok("cat \"$ROOT/out\"", timeout: 10), "old1\nold2\nnew1\nnew2\n")
        let err = ok("cat \"$ROOT/err\"", timeout: 10)
        XCTAssertTrue(err.contains("truncated"), "tail did not notice the reset: \(err)")
    }

    // MARK: Readers that leave the rest of a shared descriptor

    func testHeadStopsAtItsLinesAndSeeksBackForTheNextReader() {
        ok("printf '1\\n2\\n3\\n4\\n5\\n' > p", timeout: 20)
        let r = sh("timeout -k 2 10 head -n 3 p", timeout: 20)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "1\n2\n3\n")
        XCTAssertEqual(r.stderr, "")
        // head read more than two lines; seeking back hands cat the rest of the shared descriptor.
        let shared = sh("timeout -k 2 10 bash -c '{ head -n 2; cat; } < .drain/p'", timeout: 20)
        XCTAssertEqual(shared.status, 0, shared.stderr)
        XCTAssertEqual(shared.stdout, "1\n2\n3\n4\n5\n")
        XCTAssertEqual(shared.stderr, "")
    }

    func testShellReadTakesOneLineAtATime() {
        ok("printf '1\\n2\\n3\\n4\\n5\\n' > p", timeout: 20)
        let drain = sh(#"timeout -k 2 10 bash -c '{ read a; read b; echo "$a|$b"; cat; } < .drain/p'"#, timeout: 20)
        XCTAssertEqual(drain.status, 0, drain.stderr)
        XCTAssertEqual(drain.stdout, "1|2\n3\n4\n5\n")
        // On the pipe itself (which waits at its end) two reads need only the first two lines.
        let pipe = sh(#"timeout -k 2 10 bash -c '{ read a; read b; echo "$a|$b"; } < p'"#, timeout: 20)
        XCTAssertEqual(pipe.status, 0, pipe.stderr)
        XCTAssertEqual(pipe.stdout, "1|2\n")
    }

    func testShellReadLoopOverManyLines() {
        let out = ok(#"""
        python3 -c 'import sys; sys.stdout.write("".join("%079d\n" % i for i in range(20000)))' > "$ROOT/src"
        cat "$ROOT/src" > p
        n=0; while IFS= read -r l; do n=$((n + 1)); done < .drain/p; echo $n
        while IFS= read -r l; do printf '%s\n' "$l"; done < .drain/p | cmp - "$ROOT/src" && echo same
        """#, timeout: 120)
        XCTAssertEqual(out, "20000\nsame\n")
    }

    // MARK: Errors at close and fsync

    func testOversizeLineFailsCloseAndFsyncWithEMSGSIZE() {
        ok("mkfifo p", timeout: 20)
        // 2 MiB is over the default 1 MiB limit. The kernel cuts the write: a piece may be accepted (a
        // short count) before the rest is refused, or the write fails. Either way close must say so.
        let write = """
        fd = os.open("p", os.O_WRONLY)
        line = b"x" * (2 << 20) + b"\\n"
        try:
            n = os.write(fd, line)
            print("short write" if n < len(line) else "whole write accepted")
        except OSError as e:
            print("write:", errname(e))
        """
        let closed = python(write + """

        try:
            within(10, os.close, fd); print("close returned")
        except (OSError, Blocked) as e:
            print("close:", errname(e) if isinstance(e, OSError) else "blocked")
            sys.exit(3 if isinstance(e, OSError) and e.errno == errno.EMSGSIZE else 4)
        """, timeout: 30)
        XCTAssertEqual(closed.status, 3, closed.stdout + closed.stderr)
        XCTAssertTrue(["short write\nclose: EMSGSIZE\n", "write: EMSGSIZE\nclose: EMSGSIZE\n"].contains(closed.stdout),
                      closed.stdout)
        // The same on fsync, which a writer calls to know that what it wrote is stored.
        let synced = python(write + """

        try:
            within(10, os.fsync, fd); print("fsync returned")
        except (OSError, Blocked) as e:
            print("fsync:", errname(e) if isinstance(e, OSError) else "blocked")
        try:
            os.close(fd)
        except OSError:
            pass
        """, timeout: 30)
        XCTAssertEqual(synced.status, 0, synced.stderr)
        XCTAssertTrue(["short write\nfsync: EMSGSIZE\n", "write: EMSGSIZE\nfsync: EMSGSIZE\n"].contains(synced.stdout),
                      synced.stdout)
        XCTAssertEqual(ok("timeout -k 2 10 cat .drain/p", timeout: 20), "")
    }

    // MARK: Size and times

    func testSizeAndMtimeFollowPushes() {
        // The size counts each message's bytes and its newline, as a reader gets them, from the first stat
        // after the push on (on Kafka the stat waits, briefly, for the mount to stream the push).
        ok("printf 'ab\\ncde\\n' > p", timeout: 20)
        XCTAssertEqual(ok("stat -c %s p", timeout: 20), "7\n")
        ok("printf 'f\\n' > p", timeout: 20)
        XCTAssertEqual(ok("stat -c %s p", timeout: 20), "9\n")
        let out = ok("""
        before=$(date +%s)
        sleep 1.1
        echo g > p
        m=$(stat -c %Y p)
        [ "$m" -ge $((before + 1)) ] && echo later || echo "mtime $m, push after $before"
        """, timeout: 30)
        XCTAssertEqual(out, "later\n")
    }

    func testFindNewerSelectsThePipePushedSince() {
        let out = ok("""
        mkfifo p q
        echo 1 > p; echo 1 > q
        # Both first pushes are in before the mark, so only the later one is newer.
        [ "$(stat -c %s p)$(stat -c %s q)" = 22 ] || echo "sizes $(stat -c %s p) $(stat -c %s q)"
        touch "$ROOT/mark"
        sleep 1.1
        echo 2 > p
        timeout -k 2 10 find . -maxdepth 1 -newer "$ROOT/mark" -name '[pq]'
        """, timeout: 45)
        XCTAssertEqual(out, "./p\n")
    }

    func testTouchSucceedsButSetsNoTime() {
        ok("echo a > p", timeout: 20)
        let before = ok("stat -c %Y p", timeout: 20)
        // Plain touch (what make and scripts do to mark a file) succeeds; the mtime stays the last push's.
        let touched = sh("sleep 1.1; timeout -k 2 10 touch p", timeout: 20)
        XCTAssertEqual(touched.status, 0, touched.stderr)
        XCTAssertEqual(ok("stat -c %Y p", timeout: 20), before)
        // An explicit time cannot be set: it would no longer be the time of the last push.
        let dated = sh("timeout -k 2 10 touch -d '2001-01-01' p", timeout: 20)
        XCTAssertNotEqual(dated.status, 0, "touch -d succeeded")
        XCTAssertEqual(ok("stat -c %Y p", timeout: 20), before)
        XCTAssertNotEqual(ok("date -d @$(stat -c %Y p) +%Y", timeout: 20), "2001\n")
        XCTAssertEqual(ok("timeout -k 2 10 cat .drain/p", timeout: 20), "a\n")
    }
}
