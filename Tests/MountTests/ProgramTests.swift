import XCTest

/// Unmodified programs as writers and readers.
final class ProgramTests: MountTestCase {
    func testTextToolsReadPipes() {
        ok("printf 'alpha 1\\nbeta 2\\ngamma 3\\nbeta 4\\n' > p")
        XCTAssertEqual(ok("head -n 2 p"), "alpha 1\nbeta 2\n")
        XCTAssertEqual(ok("grep -m 2 beta p"), "beta 2\nbeta 4\n")
        XCTAssertEqual(ok("awk '{ s += $2 } END { print s }' .drain/p"), "10\n")
        XCTAssertEqual(ok("sed -n 's/^gamma/GAMMA/p' .drain/p"), "GAMMA 3\n")
        XCTAssertEqual(ok("dd if=.drain/p bs=3 status=none | wc -l"), "4\n")
        XCTAssertEqual(ok("wc -l < .drain/p"), "4\n")
    }

    func testWritersFromOrdinaryPrograms() {
        ok("seq 1 3 | tee p > /dev/null")
        ok("printf 'x\\ny\\n' | dd of=p status=none")
        ok("seq 4 5 > \"$ROOT/file\"; cp \"$ROOT/file\" p")
        ok("awk 'BEGIN { print \"from-awk\" > \"p\" }'")
        XCTAssertEqual(ok("cat .drain/p"), "1\n2\n3\nx\ny\n4\n5\nfrom-awk\n")
    }

    func testCopyFromADrainView() {
        ok("seq 1 1000 > p")
        ok("cp .drain/p \"$ROOT/copy\"")
        XCTAssertEqual(ok("cmp \"$ROOT/copy\" <(seq 1 1000) && echo same"), "same\n")
    }

    func testPythonScriptWritesAndReads() {
        let out = ok("""
        python3 - <<'PY'
        with open("p", "w") as f:
            for i in range(100):
                f.write("message %d\\n" % i)
        with open("p") as f:
            lines = [f.readline() for _ in range(100)]
        print(len(lines), lines[0].strip(), lines[-1].strip())
        PY
        """, timeout: 30)
        XCTAssertEqual(out, "100 message 0 message 99\n")
    }
}
