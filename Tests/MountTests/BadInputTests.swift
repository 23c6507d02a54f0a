import XCTest

/// What callers get wrong: bad names, operations a pipe directory refuses, odd bytes, partial lines, and
/// endless opening and closing. Each refusal reaches the caller as a clear errno, leaves a line in the
/// daemon's log, and the mount goes on serving.
final class BadInputTests: MountTestCase {
    func testInvalidNamesAreRefusedWithEINVALAndLogged() { invalidNames() }
    func testNamesTheKernelRefusesLeaveTheMountServing() { kernelRefusedNames() }
    func testRefusedOperationsAreLoggedAndTheMountKeepsServing() { refusedOperations() }
    func testEveryByteButNewlinePassesThroughUnchanged() { binaryBytes() }
    func testPartialLinesBecomeMessagesAtFsyncCloseAndDuplicateClose() { partialLines() }

    /// One write() of a line longer than the (default, 1 MiB) limit is more than the kernel hands the daemon
    /// in one request, so the daemon sees it in pieces. The line must still be refused with EMSGSIZE and
    /// nothing of it stored, not cut at a piece boundary and stored short.
    func testOneWriteOfALineOverTheDefaultLimitStoresNothingOfIt() {
        ok("echo before > p")
        let out = ok("""
        python3 - <<'PY'
        import errno, os
        fd = os.open("p", os.O_WRONLY)
        data = b"x" * (1100000) + b"\\n"
        done, results = 0, []
        try:
            while done < len(data):     # what a careful program does on a short write
                n = os.write(fd, data[done:])
                results.append(n)
                done += n
            print("written", results)
        except OSError as e:
            print("refused", errno.errorcode[e.errno], "after", results)
        try:
            os.close(fd)
        except OSError as e:
            print("close", errno.errorcode[e.errno])
        PY
        """, timeout: 60)
        // The kernel cuts the write at max_write: the first piece may be counted as written (a short write),
        // but the line is refused before the program's write loop ends, and nothing of it is stored.
        XCTAssertTrue(out.hasPrefix("refused EMSGSIZE"), "the write of an oversize line was not refused: \(out)")
        let stored = ok("awk '{ print length($0) }' .drain/p")
        XCTAssertEqual(stored, "6\n", "only 'before' may be stored; lengths of the stored messages: \(stored)")
        XCTAssertTrue(log.contains("exceeds the limit of 1048576 bytes"), log)
        ok("echo after >> p")
        XCTAssertEqual(ok("tail -n 1 .drain/p"), "after\n")
    }

    /// Opening and closing in a loop (readers and writers alternating) leaves no descriptor, thread or memory
    /// behind in the daemon.
    func testOpenCloseInALoopDoesNotGrowTheDaemon() {
        ok("mkfifo p")
        let pid = daemonPID
        XCTAssertFalse(pid.isEmpty)
        let loop = { (n: Int) in
            _ = self.ok("for i in $(seq \(n)); do : < p; echo x >> p; done", timeout: 120)
        }
        func usage() -> [Int] {
            ok("""
            awk '/^VmRSS:/ { print $2 } /^Threads:/ { print $2 }' /proc/\(pid)/status
            ls /proc/\(pid)/fd | wc -l
            """).split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        }
        loop(200)   // what the daemon allocates for good
        let before = usage()
        loop(1000)
        let after = usage()
        XCTAssertEqual(before.count, 3); XCTAssertEqual(after.count, 3)
        if before.count == 3 && after.count == 3 {
            XCTAssertLessThan(after[0] - before[0], 4096, "resident memory grew (KiB): \(before) -> \(after)")
            // Idle FUSE workers (up to 16) and Dispatch's pool come and go with load; a thread kept per open
            // would add hundreds over 1000 opens.
            XCTAssertLessThanOrEqual(after[1], before[1] + 16, "threads grew: \(before) -> \(after)")
            XCTAssertLessThanOrEqual(after[2], before[2], "descriptors grew: \(before) -> \(after)")
        }
        XCTAssertEqual(ok("wc -l < .drain/p"), "1200\n")
        XCTAssertEqual(ok("grep -cvx x .drain/p || true"), "0\n")
    }
}

/// The same refusals and byte handling on Kafka.
final class BadInputTestsOnKafka: MountTestCase {
    override class var backend: Backend { .kafka }
    func testInvalidNamesAreRefusedWithEINVALAndLogged() { invalidNames() }
    func testRefusedOperationsAreLoggedAndTheMountKeepsServing() { refusedOperations() }
    func testEveryByteButNewlinePassesThroughUnchanged() { binaryBytes() }
    func testPartialLinesBecomeMessagesAtFsyncCloseAndDuplicateClose() { partialLines() }
}

/// A mount with a message limit of 100 bytes.
final class BadInputTestsWithMessageLimit: MountTestCase {
    override var mountArguments: [String] { ["-o", "max_message=100"] }

    func testAWriteCarryingAnOversizeLineStoresNothingOfIt() {
        ok("echo before > p")
        // Lines that fit around the oversize one, all in one write(): none of them is stored.
        // The second: an oversize tail.
        let out = writeEach([#"b"ok1\n" + b"x" * 101 + b"\nok2\n""#, #"b"0" * 101"#])
        // The handle had lines refused: its close says so too, for writers that check only their close.
        XCTAssertEqual(out, "EMSGSIZE\nEMSGSIZE\nclose: EMSGSIZE\n")
        let r = failing("printf '%0101d\\n' 0 > p")
        XCTAssertTrue(r.output.contains("Message too long"), r.output)
        XCTAssertEqual(ok("cat .drain/p"), "before\n")
        XCTAssertGreaterThanOrEqual(log.components(separatedBy: "exceeds the limit of 100 bytes").count - 1, 3, log)
        ok("echo \(String(repeating: "z", count: 100)) >> p")
        XCTAssertEqual(ok("cat .drain/p"), "before\n" + String(repeating: "z", count: 100) + "\n")
    }

    func testAHandleGoesOnAfterARefusedWrite() {
        let out = ok("""
        python3 - <<'PY'
        import errno, os
        fd = os.open("p", os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"first\\n")
        try:
            os.write(fd, b"y" * 101 + b"\\n"); print("oversize accepted")
        except OSError as e:
            print(errno.errorcode[e.errno])
        os.write(fd, b"second\\n")
        try:
            os.close(fd); print("close ok")
        except OSError as e:
            print("close " + errno.errorcode[e.errno])
        PY
        """)
        // Later writes are stored; the close reports the refusal, for a writer that checks only its close.
        XCTAssertEqual(out, "EMSGSIZE\nclose EMSGSIZE\n")
        XCTAssertEqual(ok("cat .drain/p"), "first\nsecond\n")
    }
}

extension MountTestCase {
    /// Runs a command that must fail; returns its status and what it printed on either stream (a shell
    /// prints a failed redirection's error itself).
    fileprivate func failing(_ command: String, file: StaticString = #filePath, line: UInt = #line) -> (status: Int32, output: String) {
        let r = sh("{ \(command)\n} 2>&1", file: file, line: line)
        XCTAssertNotEqual(r.status, 0, "\(command.prefix(60)) succeeded", file: file, line: line)
        return (r.status, r.stdout + r.stderr)
    }

    /// Pushes a fresh line to pipe `ok` and pulls it back: the mount still serves.
    fileprivate func assertServing(_ context: String, file: StaticString = #filePath, line: UInt = #line) {
        let token = "alive-\(UInt32.random(in: 0...UInt32.max))"
        let r = sh("echo \(token) >> ok && tail -n 1 .drain/ok", file: file, line: line)
        XCTAssertEqual(r.stdout, token + "\n", "the mount stopped serving after \(context): \(r.stderr)", file: file, line: line)
    }

    fileprivate func invalidNames(file: StaticString = #filePath, line: UInt = #line) {
        ok("mkfifo ok", file: file, line: line)
        let tooLong = String(repeating: "n", count: maxNameLength + 1)
        // (shell word, what the log shows of it)
        let names: [(String, String)] = [
            ("$'tab\\there'", "tab\there"), ("$'new\\nline'", "new\nline"), ("'star*'", "star*"),
            ("'colon:x'", "colon:x"), ("'plus+x'", "plus+x"), ("'at@x'", "at@x"), ("'back\\slash'", "back\\slash"),
            ("$'caf\\xc3\\xa9'", "caf\u{e9}"), ("$'raw\\xff'", "raw"), ("$'ctl\\x01'", "ctl\u{1}"),
            ("'\u{1F600}'", "\u{1F600}"), ("'sp ace'", "sp ace"), (tooLong, tooLong),
        ]
        for (word, shown) in names {
            for command in ["mkfifo \(word)", "touch \(word)", "echo x > \(word)", "echo x >> \(word)"] {
                let r = failing(command, file: file, line: line)
                XCTAssertTrue(r.output.contains("Invalid argument"), "\(command): \(r.output)", file: file, line: line)
            }
            XCTAssertTrue(log.contains("pipe name '\(shown)"), "no log line for \(word.debugDescription)", file: file, line: line)
            assertServing(word, file: file, line: line)
        }
        XCTAssertEqual(ok("ls", file: file, line: line), "ok\n", "a refused name was created", file: file, line: line)
        let refusals = log.components(separatedBy: "refused (EINVAL)").count - 1
        XCTAssertGreaterThanOrEqual(refusals, names.count * 4, "one log line per refusal", file: file, line: line)
    }

    /// Names the kernel answers itself (a slash makes a path; a component beyond PATH_MAX is too long), and
    /// names far beyond 255 bytes, which this kernel hands to the daemon: both are refused clearly.
    fileprivate func kernelRefusedNames(file: StaticString = #filePath, line: UInt = #line) {
        ok("mkfifo ok p", file: file, line: line)
        let cases: [(String, String)] = [
            ("mkfifo no/such", "No such file or directory"),
            ("echo x > p/under", "Not a directory"),
            ("mkfifo \(String(repeating: "L", count: 256))", "Invalid argument|File name too long"),
            ("echo x > \(String(repeating: "L", count: 300))", "Invalid argument|File name too long"),
            ("mkfifo \(String(repeating: "L", count: 2000))", "Invalid argument|File name too long"),
            ("mkfifo \(String(repeating: "L", count: 5000))", "File name too long"),
            ("cat \(String(repeating: "L", count: 5000))", "File name too long"),
            ("cat \(String(repeating: "L", count: 250))", "No such file or directory"),
        ]
        for (command, expected) in cases {
            let r = failing(command, file: file, line: line)
            XCTAssertTrue(expected.split(separator: "|").contains { r.output.contains($0) },
                          "\(command.prefix(40)): expected \(expected), got \(r.output.suffix(200))", file: file, line: line)
            assertServing(String(command.prefix(40)), file: file, line: line)
        }
        XCTAssertEqual(ok("ls", file: file, line: line), "ok\np\n", file: file, line: line)
    }

    fileprivate func refusedOperations(file: StaticString = #filePath, line: UInt = #line) {
        ok("mkfifo ok; echo kept > p", file: file, line: line)
        // (command, message the caller sees, what the log says)
        let cases: [(String, String, String)] = [
            ("ln -s p link", "Operation not permitted", "symlink 'link' refused"),
            ("ln p hard", "Operation not permitted", "hard link 'hard' refused"),
            ("mv p renamed", "Operation not permitted", "rename 'p' to 'renamed' refused"),
            ("mv .drain/p .drain/renamed", "Operation not permitted", "rename 'p' to 'renamed' refused"),
            ("rmdir .drain", "Operation not permitted", "rmdir '.drain' refused"),
            ("mkdir .tail/dir", "Operation not permitted", "mkdir 'dir' refused"),
            ("chown nobody p", "Operation not permitted", "chown refused"),
            ("chmod 600 p", "Operation not permitted", "chmod 600 refused"),
            ("chmod 700 .", "Operation not permitted", "chmod 700 refused"),
            ("truncate -s 1 p", "Invalid argument", "truncate of p to 1 bytes refused"),
            ("truncate -s 0 .drain/p", "Permission denied", "opening view p for writing refused"),
            ("echo x >> .drain/p", "Permission denied", "opening view p for writing refused"),
            ("echo x > .tail/p", "Permission denied", "opening view p for writing refused"),
            ("python3 -c 'import os; os.open(\".tail/p\", os.O_RDWR)'", "Permission denied", "opening view p for writing refused"),
            ("mkfifo .drain/new", "Permission denied", "mknod in a view directory refused"),
            ("touch .tail/new", "Permission denied", "create in a view directory refused"),
            ("rm .tail/p", "Permission denied", "unlink in a view directory refused"),
        ]
        for (command, message, logged) in cases {
            let before = log.components(separatedBy: logged).count
            let r = failing(command, file: file, line: line)
            XCTAssertTrue(r.output.contains(message), "\(command): expected '\(message)', got \(r.output)", file: file, line: line)
            XCTAssertGreaterThan(log.components(separatedBy: logged).count, before, "\(command): no log line '\(logged)'", file: file, line: line)
            assertServing(command, file: file, line: line)
        }
        XCTAssertEqual(ok("ls", file: file, line: line), "ok\np\n", file: file, line: line)
        XCTAssertEqual(ok("cat .drain/p", file: file, line: line), "kept\n", file: file, line: line)
        XCTAssertEqual(ok("stat -c '%A %U' p .drain/p . .drain", file: file, line: line),
                       "-rw-r--r-- root\n-r--r--r-- root\ndrwxr-xr-x root\ndrwxr-xr-x root\n", file: file, line: line)
    }

    /// Lines holding every byte value but the newline (NULs, CRs, invalid UTF-8), empty lines, written in
    /// odd pieces and read in odd pieces, come out exactly as written.
    fileprivate func binaryBytes(file: StaticString = #filePath, line: UInt = #line) {
        let out = ok("""
        python3 - "$ROOT/in" <<'PY'
        import random, sys
        rng = random.Random(7)
        every = bytes(b for b in range(256) if b != 10)
        lines = [every, every[::-1], b"\\0", b"", b"\\r", b"\\0\\0\\0", b"\\xff\\xfe\\xc3", b"", b"a\\rb\\0c"]
        for _ in range(200):
            lines.append(bytes(rng.choice(every) for _ in range(rng.randrange(0, 300))))
        open(sys.argv[1], "wb").write(b"".join(l + b"\\n" for l in lines))
        print(len(lines))
        PY
        cat "$ROOT/in" > p                                   # one write
        dd if="$ROOT/in" of=q bs=7 status=none               # many writes, lines cut anywhere
        cmp .drain/p "$ROOT/in" && echo p-same
        cmp .drain/q "$ROOT/in" && echo q-same
        dd if=.drain/p bs=5 status=none | cmp - "$ROOT/in" && echo small-reads-same
        """, timeout: 60, file: file, line: line)
        XCTAssertEqual(out, "209\np-same\nq-same\nsmall-reads-same\n", file: file, line: line)
        XCTAssertEqual(ok("wc -l < .drain/p", file: file, line: line), "209\n", "empty lines are messages too", file: file, line: line)
    }

    /// A partial line becomes a message at fsync, at a close of any descriptor of its handle (a dup), and at
    /// the last close; NULs in it are kept.
    fileprivate func partialLines(file: StaticString = #filePath, line: UInt = #line) {
        let out = ok("""
        python3 - <<'PY'
        import os, subprocess
        def drain():
            return open(".drain/p", "rb").read()
        fd = os.open("p", os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"sync\\0ed")
        print(repr(drain()))
        os.fsync(fd)
        print(repr(drain()))
        os.write(fd, b"dup")
        os.close(os.dup(fd))
        print(repr(drain()))
        os.write(fd, b"last")
        os.close(fd)
        print(repr(drain()))
        PY
        printf 'no newline\\0' >> p
        """, timeout: 30, file: file, line: line)
        XCTAssertEqual(out, "b''\nb'sync\\x00ed\\n'\nb'sync\\x00ed\\ndup\\n'\nb'sync\\x00ed\\ndup\\nlast\\n'\n", file: file, line: line)
        XCTAssertEqual(ok("od -An -c .drain/p | tr -s ' \\n' ' '", file: file, line: line),
                       " s y n c \\0 e d \\n d u p \\n l a s t \\n n o n e w l i n e \\0 \\n ", file: file, line: line)
    }
}
