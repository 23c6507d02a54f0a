@testable import DNPipesEmbedded
import Foundation
import XCTest

final class DescriptorCacheTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "dnpipes-fdcache-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for i in 0..<20 { _ = FileManager.default.createFile(atPath: "\(directory)/\(i)", contents: Data("file \(i)\n".utf8)) }
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    private func firstByte(_ cache: DescriptorCache, _ slot: DescriptorCache.Slot) throws -> UInt8 {
        try cache.use(slot) { fd in
            var byte: UInt8 = 0
            XCTAssertEqual(pread(fd, &byte, 1, 0), 1)
            return byte
        }
    }

    /// However many files are used, at most `capacity` stay open, and a closed one opens again when used.
    func testAtMostCapacityFilesStayOpen() throws {
        let cache = DescriptorCache(capacity: 8)
        let slots = (0..<20).map { DescriptorCache.Slot(path: "\(directory)/\($0)") }
        for slot in slots { XCTAssertEqual(try firstByte(cache, slot), UInt8(ascii: "f")) }
        XCTAssertEqual(cache.openCount, 8)
        for slot in slots.reversed() { XCTAssertEqual(try firstByte(cache, slot), UInt8(ascii: "f")) }
        XCTAssertEqual(cache.openCount, 8)
        slots.forEach(cache.close)
        XCTAssertEqual(cache.openCount, 0)
    }

    /// A file with writes not synced yet is not closed by eviction (its writeback error must reach the sync).
    func testUnsyncedFilesAreNotEvicted() throws {
        let cache = DescriptorCache(capacity: 8)
        let dirty = DescriptorCache.Slot(path: "\(directory)/0")
        _ = try firstByte(cache, dirty)
        cache.wrote(dirty)
        let others = (1..<20).map { DescriptorCache.Slot(path: "\(directory)/\($0)") }
        for slot in others { _ = try firstByte(cache, slot) }
        XCTAssertEqual(cache.openCount, 8)
        XCTAssertTrue(cache.isOpen(dirty), "the least recently used, but unsynced: kept")
        try cache.sync(dirty)
        for slot in others.prefix(8) { _ = try firstByte(cache, slot) }
        XCTAssertFalse(cache.isOpen(dirty), "once synced it may go")
    }

    func testAGoneFileIsReportedAsSuch() throws {
        let cache = DescriptorCache(capacity: 8)
        let slot = DescriptorCache.Slot(path: "\(directory)/missing")
        XCTAssertThrowsError(try firstByte(cache, slot)) { XCTAssertTrue($0 is SegmentGone, "\($0)") }
    }
}
