import XCTest
import DNPipesCore
import DNPipesEmbedded
@testable import DNPipesFileSystem
#if canImport(Glibc)
import Glibc
#endif

/// Readers of `.group/GROUP/PIPE` and `.take/GROUP/PIPE` without a kernel: members of one group share the
/// pipe's messages, one message per read; a job read but not finished goes back to the group when its
/// reader closes; a `.take/` read is done at once. On the in-memory store, and through
/// `EmbeddedGroupReaderTests` on the embedded store.
class GroupReaderTests: FileSystemTestCase {
    /// The node id of `.group/GROUP/PIPE` (or `.take/...`), as lookups from the root give it.
    func member(_ group: String, _ pipe: String, view: String = ".group", file: StaticString = #filePath, line: UInt = #line) -> UInt64 {
        let groups = lookUp(view, file: file, line: line)
        return lookUp(pipe, in: lookUp(group, in: groups, file: file, line: line), file: file, line: line)
    }

    /// One read of a group reader: its message, or nil when none came within a few seconds.
    func job(_ fh: UInt64, file: StaticString = #filePath, line: UInt = #line) -> String? {
        taken(fh, read(fh), file: file, line: line)
    }

    func testMembersOfOneGroupShareTheMessagesOnePerRead() {
        let w = open(makePipe("jobs"), O_WRONLY)
        written(w, (1...10).map { "job\($0)\n" }.joined())
        XCTAssertTrue(isOK(close(w)))
        let a = open(member("g", "jobs"), O_RDONLY)
        let b = open(member("g", "jobs"), O_RDONLY)
        var seen: [String] = []
        for _ in 0..<5 {
            for reader in [a, b] {
                guard let got = job(reader) else { return XCTFail("a member's read got nothing after \(seen)") }
                XCTAssertEqual(got.filter { $0 == "\n" }.count, 1, "one message per read: \(got)")
                seen.append(got)
            }
        }
        XCTAssertEqual(seen.sorted(), (1...10).map { "job\($0)\n" }.sorted(), "each job once, to one member")
        // Nothing is left for this group; the pipe itself still holds every message for other readers.
        XCTAssertTrue(read(a).isPending(after: 0.3))
        XCTAssertEqual(readText(open(lookUp("jobs", in: Inodes.drainDirectory), O_RDONLY), count: 1000).count,
                       (1...10).map { "job\($0)\n" }.joined().count)
        _ = close(a)
        _ = close(b)
    }

    func testAJobReadButNotFinishedGoesBackWhenItsReaderCloses() {
        let w = open(makePipe("jobs"), O_WRONLY)
        written(w, "first\nsecond\n")
        XCTAssertTrue(isOK(close(w)))
        let a = open(member("g", "jobs"), O_RDONLY)
        XCTAssertEqual(job(a), "first\n")
        _ = close(a)   // closed before reading again: "first" was not done
        let b = open(member("g", "jobs"), O_RDONLY)
        XCTAssertEqual(job(b), "first\n", "the job a member left unfinished is given to the next")
        XCTAssertEqual(job(b), "second\n")
        _ = close(b)
    }

    func testATakeIsDoneAtOnceAndAnotherGroupReadsOnItsOwn() {
        let w = open(makePipe("jobs"), O_WRONLY)
        written(w, "first\nsecond\n")
        XCTAssertTrue(isOK(close(w)))
        let t = open(member("g", "jobs", view: ".take"), O_RDONLY)
        XCTAssertEqual(job(t), "first\n")
        _ = close(t)
        let next = open(member("g", "jobs", view: ".take"), O_RDONLY)
        XCTAssertEqual(job(next), "second\n", "a taken message is not given again")
        _ = close(next)
        let other = open(member("h", "jobs"), O_RDONLY)
        XCTAssertEqual(job(other), "first\n", "each group has its own progress")
        _ = close(other)
    }
}

/// The same tests on the embedded store, whose group journals are pipes on disk.
final class EmbeddedGroupReaderTests: GroupReaderTests {
    override func makeStore() throws -> PipeStore { try makeEmbeddedStore() }

    /// A job done (its reader read again) stays done for the next daemon on the same data directory.
    func testAGroupsProgressOutlivesTheStore() throws {
        let w = open(makePipe("jobs"), O_WRONLY)
        written(w, "first\nsecond\n")
        XCTAssertTrue(isOK(close(w)))
        let a = open(member("g", "jobs"), O_RDONLY)
        XCTAssertEqual(job(a), "first\n")
        XCTAssertEqual(job(a), "second\n")   // this read marks "first" done
        _ = close(a)                          // "second" was not done: it goes back
        shutDown()
        XCTAssertEqual(try readAfterRestart(data, path: [".group", "g", "jobs"]), "second\n")
    }
}
