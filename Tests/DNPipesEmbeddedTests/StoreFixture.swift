#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import XCTest
import DNPipesTestSupport
import DNPipesCore
@testable import DNPipesEmbedded

/// A temporary data directory and helpers to drive an `EmbeddedStore` synchronously from a test.
class StoreTestCase: XCTestCase {
    /// The temporary directory; the store's data directory is `data` inside it.
    private(set) var root = ""
    var data: String { root + "/data" }

    override func setUpWithError() throws {
        var template = Array((NSTemporaryDirectory() + "/dnpipes-tests-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard let made else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        root = String(cString: made)
    }

    override func tearDownWithError() throws {
        if !root.isEmpty { try FileManager.default.removeItem(atPath: root) }
    }

    static let logger: Logger = {
        var logger = Logger(label: "dnpipes.tests")
        logger.logLevel = .critical
        return logger
    }()

    func makeStore(at directory: String? = nil, _ config: EmbeddedStore.Configuration = .init()) throws -> EmbeddedStore {
        try EmbeddedStore(directory: directory ?? data, configuration: config, logger: Self.logger)
    }

    /// Runs `body` on a store, then shuts it down and lets it go (which releases the directory lock).
    func withStore<T>(at directory: String? = nil, _ config: EmbeddedStore.Configuration = .init(),
                      _ body: (EmbeddedStore) throws -> T) throws -> T {
        let store = try makeStore(at: directory, config)
        defer { store.shutdown() }
        return try body(store)
    }

    func name(_ s: String) -> PipeName { try! PipeName(validating: s) }

    func openLog(_ store: EmbeddedStore, _ pipe: String, file: StaticString = #filePath, line: UInt = #line) throws -> PipeLog {
        guard let log = try store.open(name(pipe)) else {
            XCTFail("no pipe \(pipe)", file: file, line: line)
            throw PipeError.noSuchPipe(name(pipe))
        }
        return log
    }

    func flush(_ writer: PipeWriter, file: StaticString = #filePath, line: UInt = #line) {
        let done = expectation(description: "flush")
        writer.flush { error in
            XCTAssertNil(error, "flush failed", file: file, line: line)
            done.fulfill()
        }
        wait(for: [done], timeout: 10)
    }

    func reset(_ log: PipeLog, file: StaticString = #filePath, line: UInt = #line) {
        let done = expectation(description: "reset")
        log.reset { error in
            XCTAssertNil(error, "reset failed", file: file, line: line)
            done.fulfill()
        }
        wait(for: [done], timeout: 10)
    }

    /// Pushes `messages` through one writer in batches of `batch` and waits for the flush.
    func write(_ log: PipeLog, _ messages: [[UInt8]], batch: Int = 7, file: StaticString = #filePath, line: UInt = #line) throws {
        let writer = try log.makeWriter()
        var i = 0
        while i < messages.count {
            try writer.push(Array(messages[i..<min(i + batch, messages.count)]))
            i += batch
        }
        flush(writer, file: file, line: line)
    }

    /// Fetches everything from `offset` on; checks that batches are contiguous (unless `allowGaps`) and returns the offset of the
    /// first message returned (nil if none) and the messages.
    func readAll(_ log: PipeLog, from offset: Int64 = 0, maxBytes: Int = 1 << 16, allowGaps: Bool = false,
                 file: StaticString = #filePath, line: UInt = #line) throws -> (first: Int64?, messages: [[UInt8]]) {
        var next = offset
        var first: Int64?
        var out: [[UInt8]] = []
        while true {
            switch try log.fetch(from: next, maxBytes: maxBytes) {
            case .messages(let batch):
                XCTAssertFalse(batch.isEmpty, "an empty batch", file: file, line: line)
                if batch.isEmpty { return (first, out) }
                let at = batch.offsets[0]
                if first == nil { first = at } else if !allowGaps { XCTAssertEqual(at, next, "a gap in the log", file: file, line: line) }
                XCTAssertGreaterThanOrEqual(at, next, file: file, line: line)
                XCTAssertEqual(batch.offsets, Array(at..<(at + Int64(batch.messages.count))), "offsets within a segment are consecutive", file: file, line: line)
                out += batch.messages
                next = batch.offsets.last! + 1
            case .nothing:
                return (first, out)
            case .removed:
                XCTFail("pipe removed", file: file, line: line)
                return (first, out)
            }
        }
    }

    /// `count` distinct messages of random lengths in `0...maxLength` (binary, NULs included, no newlines).
    func randomMessages(_ count: Int, maxLength: Int, using rng: inout SplitMix64) -> [[UInt8]] {
        (0..<count).map { i in
            let tag = Array("#\(i):".utf8)
            let length = Int.random(in: 0...maxLength, using: &rng)
            return tag + (0..<length).map { _ in
                var b: UInt8
                repeat { b = UInt8.random(in: 0...255, using: &rng) } while b == 0x0A
                return b
            }
        }
    }

    /// The segment files of a pipe, sorted by base offset, as (base, path).
    func segmentFiles(_ pipe: String, in directory: String? = nil) throws -> [(base: Int64, path: String)] {
        let dir = (directory ?? data) + "/pipes/" + pipe
        return try FileManager.default.contentsOfDirectory(atPath: dir)
            .filter { $0.hasSuffix(".log") }
            .map { (Int64($0.dropLast(4))!, dir + "/" + $0) }
            .sorted { $0.base < $1.base }
    }

    /// The bytes a batch of `messages` takes in a segment file.
    func batchSize(_ messages: ArraySlice<[UInt8]>) -> Int {
        BatchFormat.headerSize(count: messages.count) + messages.reduce(0) { $0 + $1.count + 1 }
    }

    func fileSize(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber).intValue
    }
}

/// A thread-safe counter for observer callbacks.
// @unchecked Sendable: the count is guarded by its lock.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func increment() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
