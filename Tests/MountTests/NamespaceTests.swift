import XCTest

/// Creating, listing and deleting pipes, and what the directory refuses.
final class NamespaceTests: MountTestCase {
    func testMkfifoCreatesARegularFilePipe() {
        ok("mkfifo jobs")
        XCTAssertEqual(ok("stat -c %F jobs"), "regular empty file\n", "pipes must be regular files to the kernel")
        XCTAssertEqual(ok("ls"), "jobs\n")
        ok("echo one > jobs")
        XCTAssertEqual(ok("cat .drain/jobs"), "one\n")
    }

    func testRedirectAndTouchCreatePipes() {
        ok("echo first > made-by-redirect; touch made-by-touch")
        XCTAssertEqual(ok("ls"), "made-by-redirect\nmade-by-touch\n")
        XCTAssertEqual(ok("cat .drain/made-by-redirect"), "first\n")
        XCTAssertEqual(ok("cat .drain/made-by-touch"), "")
    }

    func testMkfifoOnExistingPipeFailsWithEEXIST() {
        ok("mkfifo jobs")
        let r = sh("mkfifo jobs")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("File exists"), r.stderr)
    }

    func testRmDeletesAndReaderGetsEndOfFile() {
        ok("mkfifo jobs && echo a > jobs")
        // A blocked reader ends (status 0) once the pipe is deleted.
        let out = ok("""
        cat jobs > "$ROOT/reader.out" & reader=$!
        sleep 0.5
        rm jobs
        wait $reader
        cat "$ROOT/reader.out"
        ls
        """, timeout: 20)
        XCTAssertEqual(out, "a\n")
        XCTAssertNotEqual(sh("cat .drain/jobs").status, 0)
    }

    func testNamesFollowKafkaTopicRules() {
        ok("mkfifo Valid.name_with-all.0-9")
        let longest = String(repeating: "x", count: maxNameLength)
        ok("mkfifo \(longest)")
        for bad in ["'with space'", "'semi;colon'", "\(String(repeating: "y", count: maxNameLength + 1))", "'caf\u{e9}'"] {
            let r = sh("mkfifo \(bad)")
            XCTAssertNotEqual(r.status, 0, "\(bad) must be refused")
            XCTAssertTrue(r.stderr.contains("Invalid argument"), "\(bad): \(r.stderr)")
            let r2 = sh("echo x > \(bad)")
            XCTAssertTrue(r2.stderr.contains("Invalid argument"), "\(bad) via >: \(r2.stderr)")
        }
        XCTAssertTrue(log.contains("pipe name 'with space' refused (EINVAL)"), log)
        XCTAssertEqual(ok("ls | wc -l").trimmingCharacters(in: .whitespacesAndNewlines), "2")
    }

    func testViewsAreHiddenFromTheRootButListable() {
        ok("mkfifo a b")
        XCTAssertEqual(ok("ls -a"), ".\n..\na\nb\n")
        XCTAssertEqual(ok("ls .drain"), "a\nb\n")
        XCTAssertEqual(ok("ls .tail"), "a\nb\n")
    }

    func testStructuralOperationsAreRefusedAndTheMountKeepsServing() {
        ok("mkfifo p && echo kept > p")
        let cases: [(String, String)] = [
            ("mkdir d", "Operation not permitted"),
            ("ln -s p link", "Operation not permitted"),
            ("ln p hard", "Operation not permitted"),
            ("mv p q", "Operation not permitted"),
            ("chmod 4777 p", "Operation not permitted"),
            ("mknod dev c 1 3", "Operation not permitted"),
            ("truncate -s 5 p", "Invalid argument"),
            ("echo x > .drain/p", "Permission denied"),
            ("echo x > .tail/p", "Permission denied"),
            ("rm .drain/p", "Permission denied"),
        ]
        for (command, message) in cases {
            let r = sh(command)
            XCTAssertNotEqual(r.status, 0, command)
            XCTAssertTrue(r.stderr.contains(message), "\(command): expected '\(message)', got \(r.stderr)")
        }
        XCTAssertTrue(log.contains("mkdir 'd' refused"), log)
        XCTAssertTrue(log.contains("truncate of p to 5 bytes refused"), log)
        XCTAssertEqual(ok("ls"), "p\n")
        XCTAssertEqual(ok("cat .drain/p"), "kept\n")
        ok("chmod 644 p && touch p")
    }

    /// A listing read in several batches (glibc's readdir takes 32 KiB at a time, about 128 of these long
    /// names) while a pipe that sorts first is made between two batches: every pipe is listed once, none
    /// twice, as readdir promises for entries that exist the whole time.
    func testAListingIsConsistentWhilePipesAreMade() {
        let out = ok("""
        python3 - \(maxNameLength - 4) <<'PY'
        import os, sys
        length = int(sys.argv[1])
        names = ["n%03d" % i + "x" * (length - 4) for i in range(150)]
        for n in names:
            os.close(os.open(n, os.O_WRONLY | os.O_CREAT))
        it = os.scandir(".")
        seen = [next(it).name]
        os.close(os.open("a" + "y" * (length - 1), os.O_WRONLY | os.O_CREAT))
        seen += [e.name for e in it]
        listed = [n for n in seen if n.startswith("n")]
        print(len(listed), len(set(listed)), len(set(names) - set(listed)))
        PY
        """, timeout: 120)
        XCTAssertEqual(out, "150 150 0\n")
    }
}
