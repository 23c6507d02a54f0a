import DNPipesTestSupport
import Foundation
import XCTest

/// The use cases under examples/: each run script mounts its own pipe directory, plays its scenario with
/// ordinary shell programs, checks the outcome and cleans up.
final class ExampleTests: XCTestCase {
    var examples: String { repositoryRoot + "/examples" }

    /// Runs examples/NAME/run with the built binary, its scratch directories in a fresh TMPDIR; returns its
    /// result and how long it took, and checks that it left nothing behind: no mount, no process, no file.
    func runExample(_ name: String, binary: String = dnpipesBinary, limit: Int = 60,
                    file: StaticString = #filePath, line: UInt = #line) -> (ShellResult, TimeInterval) {
        var template = Array((NSTemporaryDirectory() + "dnpipes-example-XXXXXX").utf8CString)
        guard mkdtemp(&template) != nil else {
            XCTFail("mkdtemp failed", file: file, line: line)
            return (ShellResult(status: -1, stdout: "", stderr: ""), 0)
        }
        let tmp = text(of: template)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let start = Date()
        let r = shell(quote(examples + "/" + name + "/run"), cwd: repositoryRoot,
                      env: ["DNPIPES_BIN": binary, "EXAMPLE_TIMEOUT": String(limit), "TMPDIR": tmp],
                      timeout: limit + 30, file: file, line: line)
        let seconds = Date().timeIntervalSince(start)
        // (The path comes in through the environment, so that pgrep does not find this script itself.)
        let left = shell("""
        grep -c -F " $T/" /proc/self/mounts
        pgrep -f -- "$T/" | wc -l
        ls -A "$T" | wc -l
        """, env: ["T": tmp])
        XCTAssertEqual(left.stdout, "0\n0\n0\n", "\(name) left mounts, processes or files behind", file: file, line: line)
        return (r, seconds)
    }

    func testEveryExampleIsTested() throws {
        let found = try FileManager.default.contentsOfDirectory(atPath: examples)
            .filter { FileManager.default.isExecutableFile(atPath: examples + "/" + $0 + "/run") }.sorted()
        XCTAssertEqual(found, ["event-dispatch", "pipeline", "work-queue"])
    }

    func check(_ name: String, says summary: String, file: StaticString = #filePath, line: UInt = #line) {
        let (r, _) = runExample(name, file: file, line: line)
        XCTAssertEqual(r.status, 0, "\(name) failed:\n\(r.stdout)\(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(summary), "\(name):\n\(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.hasSuffix("\(name): OK\n"), r.stderr, file: file, line: line)
    }

    func testWorkQueue() {
        check("work-queue", says: "30 jobs, each done exactly once, the killed worker's job by another")
    }

    func testEventDispatch() {
        check("event-dispatch", says: "auditor counted 40, alerter raised 5 alerts, archiver kept 40 lines")
    }

    func testPipeline() {
        check("pipeline", says: "25 odd squares of 1..50, total 20825")
    }

    /// The examples check their outcome: on a mount that refuses most messages (longer than 2 bytes), each
    /// one fails, within its time limit, and still cleans up.
    func testExamplesFailWhenMessagesAreLost() throws {
        let lossy = NSTemporaryDirectory() + "dnpipes-lossy-\(getpid())"
        try """
        #!/bin/sh
        if [ "$1" = mount ]; then exec \(quote(dnpipesBinary)) "$@" --max-message-bytes 2; fi
        exec \(quote(dnpipesBinary)) "$@"

        """.write(toFile: lossy, atomically: true, encoding: .utf8)
        chmod(lossy, 0o755)
        defer { try? FileManager.default.removeItem(atPath: lossy) }
        for name in ["work-queue", "event-dispatch", "pipeline"] {
            let (r, seconds) = runExample(name, binary: lossy, limit: 15)
            XCTAssertNotEqual(r.status, 0, "\(name) passed on a mount that lost messages:\n\(r.stderr)")
            XCTAssertTrue(r.stderr.contains("\(name): exit status"), "\(name):\n\(r.stderr)")
            XCTAssertLessThan(seconds, 25, "\(name) took \(seconds) s")
        }
    }
}
