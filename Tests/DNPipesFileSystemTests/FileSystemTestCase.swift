import Foundation
import Logging
import XCTest
import DNPipesCore
import DNPipesEmbedded
import DNPipesTestSupport
@testable import DNPipesFileSystem
#if canImport(Glibc)
import Glibc
#endif

/// A `PipeFileSystem` on a fresh store per test, driven as the kernel would: every operation with a reply
/// token whose answers are recorded. Runs on the in-memory store; `EmbeddedFileSystemTests` runs the same
/// tests on the embedded store. Tear-down checks that no token was dropped unanswered or answered twice.
class FileSystemTestCase: XCTestCase {
    private(set) var store: PipeStore!
    private(set) var fs: PipeFileSystem!
    private var misusesBefore = (dropped: 0, twice: 0)
    /// The kernel's file position of each handle: reads and writes move it as read(2) and write(2) do.
    private var positions: [UInt64: Int64] = [:]
    /// Removed at tear-down.
    private var directories: [String] = []

    static let logger: Logger = {
        var logger = Logger(label: "dnpipes.tests")
        logger.logLevel = .critical
        return logger
    }()

    /// The framer's limit in these tests: a line longer than this is refused.
    static let maxMessageBytes = 64

    func makeStore() throws -> PipeStore { InMemoryStore(maxMessageBytes: 1 << 20) }

    override func setUpWithError() throws {
        misusesBefore = ReplyAudit.misuses
        store = try makeStore()
        fs = PipeFileSystem(store: store, options: .init(maxMessageBytes: Self.maxMessageBytes), logger: Self.logger)
    }

    override func tearDown() {
        shutDown()
        positions = [:]
        for directory in directories { try? FileManager.default.removeItem(atPath: directory) }
        directories = []
        let misuses = ReplyAudit.misuses
        XCTAssertEqual(misuses.dropped, misusesBefore.dropped, "a reply token was dropped unanswered")
        XCTAssertEqual(misuses.twice, misusesBefore.twice, "a reply token was answered twice")
        super.tearDown()
    }

    /// A fresh directory, removed at tear-down.
    func temporaryDirectory() throws -> String {
        let directory = try makeTemporaryDirectory(prefix: "dnpipes-fs")
        directories.append(directory)
        return directory
    }

    /// Shuts the groups and the store down, in the daemon's order, and lets the filesystem and the store go
    /// (an embedded store's directory lock goes with it).
    func shutDown() {
        fs?.groups.shutdown()
        store?.shutdown()
        fs = nil
        store = nil
    }

    // MARK: Requests

    /// Calls `operation` with a fresh token and returns its recorder.
    func request<Answer>(_ operation: (Reply<Answer>) -> Void) -> ReplyRecorder<Answer> {
        let recorder = ReplyRecorder<Answer>()
        operation(recorder.reply())
        return recorder
    }

    func name(_ text: String) -> PipeName { try! PipeName(validating: text) }

    /// Makes pipe `name` as `mkfifo` does and returns its node id as a later lookup gives it.
    @discardableResult
    func makePipe(_ name: String, file: StaticString = #filePath, line: UInt = #line) -> UInt64 {
        let made = request { fs.mknod($0, parent: Inodes.root, name: EntryName(name), mode: S_IFIFO | 0o644) }
        XCTAssertNotNil(made.answer(file: file, line: line), "mkfifo \(name)", file: file, line: line)
        return lookUp(name, file: file, line: line)
    }

    /// Makes pipe `name` and opens a writer and a reader on it.
    func pipeWithWriterAndReader(_ name: String = "jobs") -> (ino: UInt64, w: UInt64, r: UInt64) {
        let ino = makePipe(name)
        return (ino, open(ino, O_WRONLY), open(ino, O_RDONLY))
    }

    func lookUp(_ name: String, in parent: UInt64 = Inodes.root, file: StaticString = #filePath, line: UInt = #line) -> UInt64 {
        request { fs.lookup($0, parent: parent, name: EntryName(name)) }.answer(file: file, line: line)?.ino ?? 0
    }

    func open(_ ino: UInt64, _ flags: Int32, file: StaticString = #filePath, line: UInt = #line) -> UInt64 {
        let fh = request { fs.open($0, ino: ino, flags: flags) }.answer(file: file, line: line)?.fh ?? 0
        positions[fh] = 0
        return fh
    }

    func write(_ fh: UInt64, _ text: String, flags: Int32 = 0) -> ReplyRecorder<Int> {
        let bytes = Array(text.utf8)
        return request { reply in bytes.withUnsafeBytes { fs.write(reply, fh: fh, bytes: $0, flags: flags) } }
    }

    /// A write that must succeed whole; the handle's position moves by it, as write(2)'s does.
    func written(_ fh: UInt64, _ text: String, file: StaticString = #filePath, line: UInt = #line) {
        let count = write(fh, text).answer(file: file, line: line)
        XCTAssertEqual(count, text.utf8.count, file: file, line: line)
        positions[fh, default: 0] += Int64(count ?? 0)
    }

    /// A read at the handle's position (unless `offset` is given); `taken` moves the position by its answer.
    func read(_ fh: UInt64, size: Int = 4096, offset: Int64? = nil, flags: Int32 = 0) -> ReplyRecorder<[UInt8]> {
        request { fs.read($0, fh: fh, size: size, offset: offset ?? positions[fh, default: 0], flags: flags) }
    }

    /// What `recorder`'s read got, as text, moving the handle's position past it.
    func taken(_ fh: UInt64, _ recorder: ReplyRecorder<[UInt8]>, file: StaticString = #filePath, line: UInt = #line) -> String? {
        guard let bytes = recorder.answer(file: file, line: line) else { return nil }
        positions[fh, default: 0] += Int64(bytes.count)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads at the handle's position until `count` bytes came (or a read ends the file).
    func readText(_ fh: UInt64, count: Int, file: StaticString = #filePath, line: UInt = #line) -> String {
        var text = ""
        while text.utf8.count < count, let got = taken(fh, read(fh, size: count - text.utf8.count), file: file, line: line), !got.isEmpty {
            text += got
        }
        return text
    }

    func fsync(_ fh: UInt64) -> ReplyRecorder<Done> { request { fs.fsync($0, fh: fh) } }

    /// close(2): a flush, whose answer close returns, then the release.
    func close(_ fh: UInt64) -> ReplyOutcome<Done>? {
        let flushed = request { fs.flush($0, fh: fh) }.outcome()
        XCTAssertNotNil(request { fs.release($0, fh: fh) }.answer())
        positions[fh] = nil
        return flushed
    }

    func isOK(_ outcome: ReplyOutcome<Done>?) -> Bool {
        if case .answer? = outcome { return true }
        return false
    }

    func errorCode<Answer>(_ outcome: ReplyOutcome<Answer>?) -> Int32? {
        if case .error(let code)? = outcome { return code }
        return nil
    }

    /// The data directory of the test's embedded store, once `makeEmbeddedStore` made it.
    private(set) var data = ""

    /// An embedded store in a fresh data directory (for subclasses that run on it).
    func makeEmbeddedStore() throws -> PipeStore {
        data = try temporaryDirectory() + "/data"
        return try EmbeddedStore(directory: data, logger: Self.logger)
    }

    /// What one read from position 0 of `path` (names from the root) gets through a new filesystem on a new
    /// embedded store over `data`, as the next daemon would see it (after `shutDown()`).
    func readAfterRestart(_ data: String, path: [String]) throws -> String? {
        let next = try EmbeddedStore(directory: data, logger: Self.logger)
        let filesystem = PipeFileSystem(store: next, options: .init(), logger: Self.logger)
        defer { filesystem.groups.shutdown(); next.shutdown() }
        var ino = Inodes.root
        for name in path {
            ino = try XCTUnwrap(request { filesystem.lookup($0, parent: ino, name: EntryName(name)) }.answer()).ino
        }
        let r = try XCTUnwrap(request { filesystem.open($0, ino: ino, flags: O_RDONLY) }.answer()).fh
        let got = request { filesystem.read($0, fh: r, size: 4096, offset: 0, flags: 0) }.answer()
        XCTAssertNotNil(request { filesystem.release($0, fh: r) }.answer())
        return got.map { String(decoding: $0, as: UTF8.self) }
    }
}

/// The same tests on the embedded store, in a fresh data directory per test.
final class EmbeddedFileSystemTests: FileSystemTests {
    override func makeStore() throws -> PipeStore { try makeEmbeddedStore() }

    /// What a close reported durable is there for the next daemon on the same data directory.
    func testWhatACloseMadeDurableOutlivesTheStore() throws {
        let w = open(makePipe("jobs"), O_WRONLY)
        written(w, "kept\nlast line")
        XCTAssertTrue(isOK(close(w)))
        shutDown()
        XCTAssertEqual(try readAfterRestart(data, path: ["jobs"]), "kept\nlast line\n")
    }
}
