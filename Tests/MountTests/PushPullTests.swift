import XCTest

/// Line framing on the write side, per-handle cursors on the read side.
final class PushPullTests: MountTestCase {
    func testEachLineIsAMessageAndRedirectNeverEmpties() {
        ok("printf 'a\\nb\\n' > p; printf 'c\\n' > p; echo d >> p")
        XCTAssertEqual(ok("cat .drain/p"), "a\nb\nc\nd\n")
    }

    func testMissingFinalNewlineIsAMessageAtClose() {
        ok("printf 'one\\ntwo' > p; printf 'three' > p")
        XCTAssertEqual(ok("cat .drain/p"), "one\ntwo\nthree\n")
    }

    func testPartialLinesWaitInTheirHandle() {
        // One handle writes a line in three pieces while another writes whole lines in between.
        // (One descriptor throughout and no fork: closing any descriptor of a handle, even a dup or one
        // closed on exec in a child, ends its partial line, as FUSE reports every close.)
        ok("""
        python3 - <<'PY'
        import os
        fd = os.open("p", os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"hel")
        other = os.open("p", os.O_WRONLY)
        os.write(other, b"other\\n")
        os.close(other)
        os.write(fd, b"lo wor")
        os.write(fd, b"ld\\n")
        os.close(fd)
        PY
        """)
        XCTAssertEqual(ok("cat .drain/p"), "other\nhello world\n")
    }

    func testBinaryBytesAndNULsPassThrough() {
        ok("printf 'a\\0b\\001\\377c\\n' > p")
        XCTAssertEqual(ok("od -An -tx1 .drain/p | tr -s ' \\n' ' '"), " 61 00 62 01 ff 63 0a ")
    }

    func testEveryReaderSeesEveryMessage() {
        ok("seq 1 1000 > p")
        let out = ok("""
        for i in 1 2 3; do head -n 1000 p > "$ROOT/r$i" & done
        wait
        for i in 1 2 3; do cmp "$ROOT/r$i" <(seq 1 1000) || exit 1; done
        echo same
        """, timeout: 30)
        XCTAssertEqual(out, "same\n")
    }

    func testMessageLargerThanTheReadBufferContinues() {
        let line = String(repeating: "0123456789", count: 30)
        ok("echo \(line) > p; echo short >> p")
        XCTAssertEqual(ok("dd if=.drain/p bs=7 status=none"), line + "\nshort\n")
    }

    func testConcurrentWritersNeverInterleave() {
        let out = ok("""
        for w in 1 2 3 4; do
          ( for i in $(seq 1 2000); do echo "writer-$w-line-$i-padding-padding-padding"; done > p ) &
        done
        wait
        cat .drain/p > "$ROOT/all"
        wc -l < "$ROOT/all"
        grep -cvE '^writer-[1-4]-line-[0-9]+-padding-padding-padding$' "$ROOT/all" || true
        for w in 1 2 3 4; do
          grep "^writer-$w-" "$ROOT/all" | cut -d- -f4 | cmp - <(seq 1 2000) || echo "writer $w out of order"
        done
        """, timeout: 120)
        XCTAssertEqual(out, "8000\n0\n")
    }

    func testLargeStreamRoundTrips() {
        let out = ok("""
        seq 1 200000 > "$ROOT/in"
        cat "$ROOT/in" > p
        cat .drain/p | cmp - "$ROOT/in" && echo equal
        """, timeout: 120)
        XCTAssertEqual(out, "equal\n")
    }
}

/// A mount with a small message limit.
final class MessageLimitTests: MountTestCase {
    override var mountArguments: [String] { ["-o", "max_message=100"] }

    func testOversizeMessageIsRefusedAndNothingOfItIsStored() {
        ok("echo before > p")
        let long = String(repeating: "x", count: 101)
        let r = sh("echo \(long) > p")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("Message too long"), r.stderr)
        // A long line split over several writes is refused too, at the write that makes it too long.
        let r2 = sh("python3 -c \"import os; fd=os.open('p', os.O_WRONLY); os.write(fd, b'y'*60); os.write(fd, b'y'*60)\"")
        XCTAssertNotEqual(r2.status, 0)
        // (Python's write failed, so its close ended the refused line: a new handle starts clean.)
        ok("echo \(String(repeating: "z", count: 100)) > p")
        // The 60 bytes accepted first belong to the refused line: they are dropped with it.
        XCTAssertEqual(ok("cat .drain/p"), "before\n" + String(repeating: "z", count: 100) + "\n")
        XCTAssertTrue(log.contains("exceeds the limit of 100 bytes"), log)
    }
}
