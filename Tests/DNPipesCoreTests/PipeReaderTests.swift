import Foundation
import XCTest
@testable import DNPipesCore

/// A pipe of several partitions held in memory, for `PipeReader` and the multi-partition `ReadCursor`.
/// Each partition holds messages at offsets `oldest ..< oldest + count`; a fetch returns up to `perFetch` of them.
// @unchecked Sendable: used from the test's thread only.
private final class PartitionedLog: PipeLog, @unchecked Sendable {
    let name = try! PipeName(validating: "multi")
    var partitions: [(oldest: Int64, messages: [[UInt8]])]
    var perFetch: Int
    var removed = false
    private let observers = Observers()

    init(_ partitions: [[String]], perFetch: Int = 100) {
        self.partitions = partitions.map { (0, $0.map { Array($0.utf8) }) }
        self.perFetch = perFetch
    }

    func append(_ message: String, to partition: Int) { partitions[partition].messages.append(Array(message.utf8)) }

    var partitionCount: Int { partitions.count }
    func bounds(partition: Int) -> (oldest: Int64, end: Int64) {
        let p = partitions[partition]
        return (p.oldest, p.oldest + Int64(p.messages.count))
    }
    var isRemoved: Bool { removed }
    func fetch(partition: Int, from offset: Int64, maxBytes: Int) throws -> Fetched {
        if removed { return .removed }
        let p = partitions[partition]
        let first = max(offset, p.oldest)
        let end = p.oldest + Int64(p.messages.count)
        guard first < end else { return .nothing }
        let last = min(end, first + Int64(perFetch))
        let slice = Array(p.messages[Int(first - p.oldest)..<Int(last - p.oldest)])
        return .messages(MessageBatch(first: first, messages: slice))
    }
    func makeWriter() throws -> PipeWriter { fatalError("not used") }
    func reset(completion: @escaping @Sendable (Error?) -> Void) {
        for i in partitions.indices { partitions[i] = (partitions[i].oldest + Int64(partitions[i].messages.count), []) }
        completion(nil)
    }
    func addObserver(_ callback: @escaping @Sendable () -> Void) -> Int { observers.add(callback) }
    func removeObserver(_ token: Int) { observers.remove(token) }
}

/// `PipeReader` over pipes of several partitions: every message once, each partition in its order, no
/// partition starved, the drain end per partition, partitions that appear later, and deletion.
final class PipeReaderTests: XCTestCase {
    private func lines(_ outcome: PipeReader.Outcome) -> [String] {
        guard case .data(let bytes) = outcome else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// Reads until nothing is left, with a small buffer so messages and fetches split across reads.
    private func readAll(_ reader: inout PipeReader, capacity: Int) throws -> [String] {
        var out: [UInt8] = []
        while case .data(let bytes) = try reader.read(capacity: capacity) { out += bytes }
        return String(decoding: out, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    func testEveryMessageOnceAndEachPartitionInOrder() throws {
        for (perFetch, capacity) in [(1, 7), (3, 64), (100, 1 << 16), (7, 5)] {
            let log = PartitionedLog((0..<3).map { p in (1...50).map { "p\(p)-\($0)" } }, perFetch: perFetch)
            var reader = PipeReader(log: log, start: .oldest, stopAtEnd: false)
            let got = try readAll(&reader, capacity: capacity)
            XCTAssertEqual(got.count, 150, "perFetch \(perFetch) capacity \(capacity)")
            for p in 0..<3 {
                XCTAssertEqual(got.filter { $0.hasPrefix("p\(p)-") }, (1...50).map { "p\(p)-\($0)" }, "partition \(p)")
            }
            XCTAssertEqual(reader.offsets, [50, 50, 50])
        }
    }

    /// Partitions take turns: a read that fills its buffer from one partition starts with the next one next
    /// time, so a busy partition cannot keep another waiting.
    func testPartitionsTakeTurns() throws {
        let log = PartitionedLog([(1...10).map { "a\($0)" }, (1...10).map { "b\($0)" }], perFetch: 2)
        var reader = PipeReader(log: log, start: .oldest, stopAtEnd: false)
        XCTAssertEqual(lines(try reader.read(capacity: 6)), ["a1", "a2"])
        XCTAssertEqual(lines(try reader.read(capacity: 6)), ["b1", "b2"])
        XCTAssertEqual(lines(try reader.read(capacity: 100)), ["a3", "a4", "b3", "b4"])
    }

    func testDrainStopsAtEachPartitionsEndAtStart() throws {
        let log = PartitionedLog([["a1", "a2"], ["b1"], []])
        var reader = PipeReader(log: log, start: .oldest, stopAtEnd: true)
        log.append("a3", to: 0)
        log.append("c1", to: 2)
        XCTAssertEqual(try readAll(&reader, capacity: 100).sorted(), ["a1", "a2", "b1"])
        XCTAssertEqual(try reader.read(capacity: 100), .endOfFile)
        XCTAssertTrue(reader.isReadable(), "end-of-file is readable at once")
    }

    func testStartAtEndSeesOnlyNewMessages() throws {
        let log = PartitionedLog([["a1"], ["b1"]])
        var reader = PipeReader(log: log, start: .end, stopAtEnd: false)
        XCTAssertEqual(try reader.read(capacity: 100), .nothing)
        XCTAssertFalse(reader.isReadable())
        log.append("b2", to: 1)
        XCTAssertTrue(reader.isReadable())
        XCTAssertEqual(lines(try reader.read(capacity: 100)), ["b2"])
    }

    /// A partition that appears later is read from its oldest message.
    func testNewPartitionIsFollowed() throws {
        let log = PartitionedLog([["a1"]])
        var reader = PipeReader(log: log, start: .oldest, stopAtEnd: false)
        XCTAssertEqual(lines(try reader.read(capacity: 100)), ["a1"])
        log.partitions.append((0, [Array("n1".utf8), Array("n2".utf8)]))
        XCTAssertEqual(lines(try reader.read(capacity: 100)), ["n1", "n2"])
        XCTAssertEqual(reader.offsets, [1, 2])
    }

    func testResetSkipsToEachPartitionsNewStart() throws {
        let log = PartitionedLog([["a1", "a2"], ["b1"]])
        var reader = PipeReader(log: log, start: .oldest, stopAtEnd: false)
        XCTAssertEqual(lines(try reader.read(capacity: 3)), ["a1"])
        log.reset { _ in }
        log.append("after", to: 1)
        XCTAssertEqual(lines(try reader.read(capacity: 100)), ["after"])
    }

    func testDeletedPipeEndsTheReader() throws {
        let log = PartitionedLog([["a1"], []])
        var reader = PipeReader(log: log, start: .end, stopAtEnd: false)
        XCTAssertEqual(try reader.read(capacity: 100), .nothing)
        log.removed = true
        XCTAssertEqual(try reader.read(capacity: 100), .endOfFile)
    }
}
