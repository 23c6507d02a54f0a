import Foundation
import XCTest
import DNPipesCore
@testable import DNPipesEmbedded

/// Retention in the embedded store itself: expired messages go for readers at once, segments go whole, and
/// what expired stays gone after a restart.
final class RetentionStoreTests: StoreTestCase {
    private func push(_ log: PipeLog, _ range: ClosedRange<Int>) throws {
        let writer = try log.makeWriter()
        try writer.push(range.map { Array("message \($0)".utf8) })
        flush(writer)
    }

    private func setRetention(_ store: EmbeddedStore, _ retention: Retention) {
        let done = expectation(description: "retention")
        store.setRetention(retention, of: name("p")) { error in
            XCTAssertNil(error)
            done.fulfill()
        }
        wait(for: [done], timeout: 10)
    }

    private func segmentFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: data + "/pipes/p").filter { $0.hasSuffix(".log") }.sorted()
    }

    func testExpiredSegmentsGoWholeAndStayGoneAfterARestart() throws {
        // Small segments: the old messages fill several.
        let config = EmbeddedStore.Configuration(segmentBytes: 256)
        try withStore(config) { store in
            try store.create(name("p"))
            guard let log = try store.open(name("p")) as? EmbeddedLog else { return XCTFail("no log") }
            // A segment rolls between appends: five messages each.
            for first in stride(from: 0, to: 60, by: 5) { try push(log, first...(first + 4)) }
            XCTAssertGreaterThan(try segmentFiles().count, 3)
            setRetention(store, Retention(seconds: 1))
            usleep(1_300_000)
            try push(log, 60...64)
            XCTAssertEqual(log.bounds().oldest, 60, "readers skip the expired messages at once")
            let kept = log.retained()
            XCTAssertEqual(kept.messages, 5)
            XCTAssertEqual(kept.bytes, Int64((60...64).map { "message \($0)\n".utf8.count }.reduce(0, +)))
            log.dropExpiredSegments(logger: Self.logger)
            let files = try segmentFiles()
            XCTAssertLessThanOrEqual(files.count, 2, "\(files)")
            XCTAssertFalse(files.contains(Segment.fileName(base: 0)), "\(files)")
            XCTAssertEqual(log.bounds().oldest, 60)
            XCTAssertEqual(log.retained().bytes, kept.bytes, "the bytes do not change when the disk is freed")
        }
        // The start offset was written: the messages that expired in a segment still on disk stay gone.
        try withStore(config) { store in
            let log = try openLog(store, "p")
            XCTAssertEqual(log.bounds().oldest, 60)
            guard case .messages(let batch) = try log.fetch(from: 0, maxBytes: 1 << 20) else { return XCTFail("nothing") }
            XCTAssertEqual(batch.offsets.first, 60)
            XCTAssertEqual(store.retention(of: name("p")), Retention(seconds: 1))
        }
    }
}
