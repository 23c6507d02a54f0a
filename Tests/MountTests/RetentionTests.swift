import XCTest

/// Retention set with setfattr: old messages go for every reader, new ones stay; bad values are refused.
final class RetentionTests: MountTestCase {
    func testValuesAreKeptInTheirShortestUnit() {
        ok("echo a > p")
        XCTAssertEqual(retention(), "none")
        for (given, shown) in [("7d", "7d"), ("90m", "90m"), ("3600s", "1h"), ("48h", "2d"), (" 5s\n", "5s"), ("none", "none")] {
            ok("setfattr -n user.dnpipes.retention -v \(quote(given)) p")
            XCTAssertEqual(retention(), shown, "after setting \(given)")
        }
        ok("setfattr -n user.dnpipes.retention -v 12h p; setfattr -x user.dnpipes.retention p")
        XCTAssertEqual(retention(), "none", "removing the attribute keeps every message")
    }

    func testInvalidValuesAreRefusedWithEINVAL() {
        ok("echo a > p; setfattr -n user.dnpipes.retention -v 1h p")
        let out = ok("""
        python3 - <<'PY'
        import errno, os
        for value in [b"7", b"7w", b"-1d", b"0s", b"1.5h", b"d", b"", b"99999999999d", b"\\xff", b"1h" * 100]:
            try:
                os.setxattr("p", "user.dnpipes.retention", value); print("ok")
            except OSError as e:
                print(errno.errorcode[e.errno])
        PY
        """)
        XCTAssertEqual(out, String(repeating: "EINVAL\n", count: 10))
        XCTAssertEqual(retention(), "1h", "a refused value changes nothing")
        eventually("grep -q \"retention of p not changed: retention '7w' is not\" \"$DATA/dnpipes.log\"")
    }

    /// Old messages go for a reader that opens later and for one that is open; the new one stays.
    func testOldMessagesExpireForEveryReaderAndNewOnesStay() {
        let out = ok("""
        echo old1 > p; echo old2 > p
        exec 3< p                                   # open, has read nothing yet
        setfattr -n user.dnpipes.retention -v 2s p
        sleep 3.5
        echo new > p
        cat .drain/p; echo "--- later reader"
        timeout 1 cat <&3; echo "--- open reader"
        getfattr --only-values -n user.dnpipes.messages p; echo
        getfattr --only-values -n user.dnpipes.bytes p; echo
        """, timeout: 30)
        XCTAssertEqual(out, "new\n--- later reader\nnew\n--- open reader\n1\n4\n")
    }

    /// A reader parked at the end is not disturbed by expiry and gets what comes next.
    func testBlockedReaderGetsNewMessagesAfterExpiry() {
        let out = ok("""
        echo old > p
        setfattr -n user.dnpipes.retention -v 1s p
        (timeout 10 head -n 2 p > "$ROOT/out") & reader=$!
        sleep 2.5
        echo new > p
        wait $reader
        cat "$ROOT/out"
        """, timeout: 30)
        XCTAssertEqual(out, "old\nnew\n", "the reader had read old before it expired")
    }

    func testMountOptionSetsTheRetentionOfNewPipes() throws {
        ok("echo a > before")
        unmountAll()
        try mount(["-o", "retention=36h"])
        ok("echo a > after")
        XCTAssertEqual(retention("after"), "36h")
        XCTAssertEqual(retention("before"), "none", "the default is for pipes made from then on")
        let bad = sh("\"$DNPIPES\" mount \"$ROOT/other\" --data-dir \"$ROOT/d2\" \(backendArguments.map(quote).joined(separator: " ")) -o retention=7w")
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("retention"), bad.stderr)
    }
}

/// Embedded store: the retention survives a restart, and expired segments leave the disk whole.
final class EmbeddedRetentionTests: MountTestCase {
    override class var backend: Backend { .embedded }

    func testExpiredSegmentsLeaveTheDiskAndTheRetentionOutlivesARestart() throws {
        ok("""
        seq 1 1000 > p
        setfattr -n user.dnpipes.retention -v 1s p
        """)
        eventually("! test -e \"$DATA/pipes/p/00000000000000000000.log\"", seconds: 10)
        XCTAssertEqual(ok("cat \"$DATA/pipes/p/start\""), "1000\n")
        XCTAssertTrue(log.contains("expired segments removed") && log.contains("segments=1"), log)
        ok("echo kept > p")
        ok("setfattr -n user.dnpipes.retention -v 1d p")
        unmountAll()
        try mount()
        XCTAssertEqual(retention(), "1d")
        XCTAssertEqual(ok("cat .drain/p"), "kept\n")
    }
}

extension MountTestCase {
    /// A pipe's retention as getfattr shows it.
    func retention(_ pipe: String = "p", file: StaticString = #filePath, line: UInt = #line) -> String {
        ok("getfattr --only-values -n user.dnpipes.retention \(pipe)", file: file, line: line)
    }
}

/// Kafka: a pipe's retention is kept on the brokers, so another host sees it and it outlives the mount.
final class KafkaRetentionTests: TwoHostTestCase {
    func testAnotherHostAndARemountSeeTheRetention() throws {
        ok("echo old > p")
        XCTAssertEqual(ok("cat .drain/p", timeout: 20), "old\n")
        let other = "\(mnt2)/p"
        XCTAssertEqual(retention(other), "none")
        ok("setfattr -n user.dnpipes.retention -v 2s p")
        // The other host streams the pipe already: it reads the retention again within ten seconds.
        eventually("test \"$(getfattr --only-values -n user.dnpipes.retention \(quote(other)))\" = 2s", seconds: 20)
        sleep(3)
        ok("echo new > p")
        eventually("test \"$(cat \(quote(mnt2 + "/.drain/p")))\" = new", seconds: 10)
        unmountAll()
        try mount()
        XCTAssertEqual(retention(), "2s")
        XCTAssertEqual(ok("cat .drain/p", timeout: 20), "new\n")
    }
}
