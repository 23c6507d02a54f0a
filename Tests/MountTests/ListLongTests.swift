import XCTest

/// `dnpipes ls -l` on the command line: a line per pipe with its messages, bytes, last push and retention.
final class ListLongTests: MountTestCase {
    func testOneLinePerPipeWithItsFacts() throws {
        ok("""
        seq 1 5 > a
        printf 'xyz\\n' > b
        setfattr -n user.dnpipes.retention -v 3d b
        mkfifo empty
        head -n 2 .take/workers/a > /dev/null
        head -n 1 .take/others/a > /dev/null
        sleep 1.5
        """)
        // The embedded store is read by one process at a time: the daemon lets it go first.
        if !isKafka { unmountAll() }
        let store = isKafka ? backendArguments.map(quote).joined(separator: " ") : "--data-dir \(quote(data))"
        let out = ok("\"$DNPIPES\" ls -l \(store)", timeout: 30)
        let rows = out.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        XCTAssertEqual(rows.first, ["MESSAGES", "BYTES", "LAST", "PUSH", "RETENTION", "GROUPS", "PIPE"], out)
        let byName = Dictionary(rows.dropFirst().map { ($0.last ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(byName["a"].map { [$0[0], $0[1], $0[3], $0[4]] }, ["5", "10", "none", "others=4,workers=3"], out)
        XCTAssertEqual(byName["b"].map { [$0[0], $0[1], $0[3], $0[4]] }, ["1", "4", "3d", "-"], out)
        XCTAssertEqual(byName["empty"].map { [$0[0], $0[1], $0[3], $0[4]] }, ["0", "0", "none", "-"], out)
        // The last push is today's date, in UTC.
        let today = ok("date -u +%Y-%m-%d").trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(byName["a"]?[2].hasPrefix(today) ?? false, out)
        XCTAssertEqual(rows.count, 4, out)
    }
}
