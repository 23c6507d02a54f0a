import XCTest

/// Pipes' facts as extended attributes, read with getfattr and Python's os.getxattr, and what setting them does.
final class ExtendedAttributeTests: MountTestCase {
    /// `getfattr -d` of a pipe, as name -> value.
    func attributes(_ pipe: String = "p", file: StaticString = #filePath, line: UInt = #line) -> [String: String] {
        let out = ok("getfattr --absolute-names -d -m user.dnpipes \(pipe)", file: file, line: line)
        var values: [String: String] = [:]
        for row in out.split(separator: "\n") where row.hasPrefix("user.dnpipes.") {
            let parts = row.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            values[parts[0]] = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        return values
    }

    func testGetfattrShowsCountsOffsetsAndReaders() {
        ok("seq 1 5 > p; printf 'twelve bytes\\n' > p")
        var a = attributes()
        XCTAssertEqual(a["user.dnpipes.messages"], "6")
        XCTAssertEqual(a["user.dnpipes.bytes"], "\(5 * 2 + 13)")
        XCTAssertEqual(a["user.dnpipes.readers"], "0")
        XCTAssertEqual(a["user.dnpipes.retention"], "none")
        let oldest = Int(a["user.dnpipes.oldest"] ?? "") ?? -1, end = Int(a["user.dnpipes.end"] ?? "") ?? -1
        XCTAssertEqual(end - oldest, 6, "offsets \(a)")
        XCTAssertGreaterThanOrEqual(oldest, 0)

        // A reader blocked at the end counts, through a view too; Python's os.getxattr reads the same.
        let out = ok("""
        cat p > /dev/null & a=$!
        cat .tail/p > /dev/null & b=$!
        sleep 1
        python3 -c 'import os; print(os.getxattr("p", "user.dnpipes.readers").decode())'
        kill $a $b; wait $a $b 2>/dev/null
        sleep 0.5
        python3 -c 'import os; print(os.getxattr("p", "user.dnpipes.readers").decode())'
        """, timeout: 20)
        XCTAssertEqual(out, "2\n0\n")

        // A reset empties the pipe: no messages, the oldest offset at the end.
        ok("truncate -s 0 p")
        a = attributes()
        XCTAssertEqual(a["user.dnpipes.messages"], "0")
        XCTAssertEqual(a["user.dnpipes.bytes"], "0")
        XCTAssertEqual(a["user.dnpipes.oldest"], a["user.dnpipes.end"])
        XCTAssertGreaterThanOrEqual(Int(a["user.dnpipes.end"] ?? "") ?? -1, end)
    }

    func testListxattrNamesEveryFact() {
        ok("echo a > p")
        let out = ok("python3 -c 'import os; print(\" \".join(sorted(os.listxattr(\"p\"))))'")
        XCTAssertEqual(out, ["bytes", "end", "messages", "oldest", "readers", "retention"]
            .map { "user.dnpipes." + $0 }.joined(separator: " ") + "\n")
        // The directory has none.
        XCTAssertEqual(ok("python3 -c 'import os; print(len(os.listxattr(\".\")))'"), "0\n")
    }

    /// Each refusal gets its errno, from Python's os.setxattr and os.removexattr, and a log line.
    func testSettingAnythingButRetentionIsRefused() {
        ok("echo a > p")
        let out = ok("""
        python3 - <<'PY'
        import errno, os
        def attempt(what, f):
            try:
                f(); print(what, "ok")
            except OSError as e:
                print(what, errno.errorcode[e.errno])
        attempt("messages", lambda: os.setxattr("p", "user.dnpipes.messages", b"3"))
        attempt("other", lambda: os.setxattr("p", "user.other", b"x"))
        attempt("view", lambda: os.setxattr(".tail/p", "user.dnpipes.retention", b"1d"))
        attempt("create", lambda: os.setxattr("p", "user.dnpipes.retention", b"1d", os.XATTR_CREATE))
        attempt("remove-end", lambda: os.removexattr("p", "user.dnpipes.end"))
        attempt("get-other", lambda: os.getxattr("p", "user.other"))
        attempt("dir", lambda: os.setxattr(".", "user.dnpipes.retention", b"1d"))
        PY
        """)
        XCTAssertEqual(out, """
        messages EPERM
        other ENOTSUP
        view EACCES
        create EEXIST
        remove-end EPERM
        get-other ENODATA
        dir ENOTSUP

        """)
        XCTAssertEqual(attributes()["user.dnpipes.retention"], "none")
        eventually("grep -q 'setting user.dnpipes.messages on p refused' \"$DATA/dnpipes.log\"")
        XCTAssertTrue(log.contains("only attribute that can be set is user.dnpipes.retention"), log)
    }

    func testSmallBuffersGetERANGE() {
        ok("seq 1 100 > p")
        let out = ok("""
        python3 - <<'PY'
        import ctypes, errno, os
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(1)
        n = libc.getxattr(b"p", b"user.dnpipes.messages", None, 0)
        print(n)
        r = libc.getxattr(b"p", b"user.dnpipes.messages", buf, 1)
        print(r, errno.errorcode[ctypes.get_errno()])
        PY
        """)
        XCTAssertEqual(out, "3\n-1 ERANGE\n")
    }
}
