#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest
import DNPipesTestSupport
import DNPipesCore
@testable import DNPipesEmbedded

/// A store written in the earlier format, a record at a time (`RecordFormat`), opens with every message, its
/// segments rewritten in the batch format, their mtimes kept; a torn tail of the newest is dropped.
final class LegacyFormatTests: StoreTestCase {
    private let config = EmbeddedStore.Configuration(maxMessageBytes: 4096, segmentBytes: 2048)

    /// Writes pipe `p` as the earlier format did: segments of records named by their base offset, a start
    /// file; each segment's mtime `age` seconds back, one more for each older segment.
    private func writeLegacyPipe(_ segments: [(base: Int64, messages: [[UInt8]])], tail: [UInt8] = [], start: Int64? = nil,
                                 age: Int = 3600) throws -> [String] {
        let directory = data + "/pipes/p"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if let start { try Data("\(start)\n".utf8).write(to: URL(fileURLWithPath: directory + "/start")) }
        var paths: [String] = []
        for (i, segment) in segments.enumerated() {
            let path = directory + "/" + Segment.fileName(base: segment.base)
            let isLast = i == segments.count - 1
            try Data(RecordFormat.encode(segment.messages) + (isLast ? tail : [])).write(to: URL(fileURLWithPath: path))
            let when = Date().addingTimeInterval(-Double(age + segments.count - i))
            try FileManager.default.setAttributes([.modificationDate: when], ofItemAtPath: path)
            paths.append(path)
        }
        return paths
    }

    private func header(of path: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: path)).prefix(BatchFormat.fileHeaderSize))
    }

    private func mtime(_ path: String) throws -> Date {
        try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as! Date
    }

    func testOpensAStoreOfTheEarlierFormat() throws {
        var rng = SplitMix64(seed: 31)
        let messages = randomMessages(90, maxLength: 80, using: &rng)
        // A torn record after the newest segment's last one, as a crash could leave it.
        let torn = Array(RecordFormat.encode([[UInt8](repeating: 0x42, count: 60)]).prefix(30))
        let paths = try writeLegacyPipe([(0, Array(messages[..<40])), (40, Array(messages[40..<75])), (75, Array(messages[75...]))],
                                        tail: torn)
        let before = try paths.map(mtime)
        // A rewrite cut short by a crash leaves its temporary file.
        let leftover = paths[0] + ".tmp"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: leftover))

        let extra = [Array("after the rewrite".utf8)]
        try withStore(at: data, config) { store in
            let log = try openLog(store, "p")
            XCTAssertEqual(log.bounds().oldest, 0)
            XCTAssertEqual(log.bounds().end, Int64(messages.count))
            XCTAssertEqual(try readAll(log).messages, messages)
            XCTAssertEqual(log.streamExtent()?.size, Int64(messages.reduce(0) { $0 + $1.count + 1 }))
            for path in paths { XCTAssertEqual(try header(of: path), BatchFormat.fileHeader, "\(path) not rewritten") }
            XCTAssertEqual(try paths.map(mtime), before, "the rewrite kept the segments' mtimes")
            XCTAssertFalse(FileManager.default.fileExists(atPath: leftover), "a rewrite's temporary file left")
            try write(log, extra)
        }
        try withStore(at: data, config) { store in
            XCTAssertEqual(try readAll(try openLog(store, "p")).messages, messages + extra)
        }
    }

    /// The start offset (a reset or retention) is kept; segments wholly below it go without a rewrite.
    func testKeepsTheStartOffset() throws {
        let messages = (0..<30).map { Array("message \($0) of the earlier format".utf8) }
        let paths = try writeLegacyPipe([(0, Array(messages[..<10])), (10, Array(messages[10..<20])), (20, Array(messages[20...]))],
                                        start: 13)
        try withStore(at: data, config) { store in
            let log = try openLog(store, "p")
            XCTAssertEqual(log.bounds().oldest, 13)
            XCTAssertEqual(try readAll(log).messages, Array(messages[13...]))
            XCTAssertFalse(FileManager.default.fileExists(atPath: paths[0]))
            XCTAssertEqual(try segmentFiles("p").map(\.base), [10, 20])
        }
    }

    /// An empty segment file of the earlier format (a new pipe, or one just reset) is an empty segment.
    func testEmptySegmentOfTheEarlierFormat() throws {
        let paths = try writeLegacyPipe([(7, [])], start: 7)
        try withStore(at: data, config) { store in
            let log = try openLog(store, "p")
            XCTAssertEqual(log.bounds().oldest, 7)
            XCTAssertEqual(log.bounds().end, 7)
            try write(log, [Array("first".utf8)])
            XCTAssertEqual(try readAll(log).messages, [Array("first".utf8)])
        }
        XCTAssertEqual(try header(of: paths[0]), BatchFormat.fileHeader)
    }
}
