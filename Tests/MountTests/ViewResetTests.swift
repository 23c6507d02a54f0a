import XCTest

/// The `.drain` and `.tail` views, and reset.
final class ViewResetTests: MountTestCase {
    func testDrainStopsAtTheEndAsItWasAtOpen() {
        let out = ok("""
        seq 1 3 > p
        exec 3< .drain/p
        echo 4 > p
        cat <&3
        exec 3<&-
        """, timeout: 20)
        XCTAssertEqual(out, "1\n2\n3\n")
    }

    func testTailSeesOnlyNewMessages() {
        let out = ok("""
        seq 1 3 > p
        head -n 2 .tail/p > "$ROOT/out" & reader=$!
        sleep 0.5
        echo new1 > p; echo new2 > p
        wait $reader
        cat "$ROOT/out"
        """, timeout: 20)
        XCTAssertEqual(out, "new1\nnew2\n")
    }

    func testTruncateToZeroResetsForEveryReader() {
        let out = ok("""
        seq 1 5 > p
        head -n 2 p > "$ROOT/early"              # a reader that already consumed part of the pipe
        exec 3< p; head -c 2 <&3 >/dev/null      # an open reader midway
        truncate -s 0 p
        cat .drain/p; echo "--- drained"
        echo after > p
        cat .drain/p
        timeout 1 cat <&3; echo "--- reader"
        """, timeout: 20)
        XCTAssertEqual(out, "--- drained\nafter\nafter\n--- reader\n")
    }

    func testOTruncIsIgnored() {
        ok("echo a > p; echo b > p; : > p")
        XCTAssertEqual(ok("cat .drain/p"), "a\nb\n")
    }
}

/// Embedded store only: a reset does not depend on the pipe's size.
final class EmbeddedResetTests: MountTestCase {
    func testResetOfAPipeWithManyMessagesIsQuick() {
        let out = ok("""
        seq 1 300000 > p
        start=$(date +%s%N)
        truncate -s 0 p
        echo $(( ($(date +%s%N) - start) / 1000000 ))
        ls "$DATA/pipes/p" | grep -c '\\.log$'
        """, timeout: 120)
        let lines = out.split(separator: "\n")
        XCTAssertLessThan(Int(lines.first ?? "99999") ?? 99999, 2000, "reset took \(lines.first ?? "?") ms")
        XCTAssertEqual(lines.last, "1", "old segments should be gone after a reset")
    }
}
