import XCTest
import DNPipesCore
@testable import DNPipesEmbedded

/// `BatchFormat`: a batch's header, lengths and framed bytes; every changed byte fails the batch's check.
final class BatchFormatTests: XCTestCase {
    private func encoded(_ messages: [[UInt8]], first: Int64) -> BatchFormat.Encoded {
        var encoded = BatchFormat.encode(MessageBlock(messages))
        encoded.place(at: first)
        return encoded
    }

    private func header(_ bytes: [UInt8], at: Int = 0) -> BatchFormat.Header? {
        bytes.withUnsafeBytes { BatchFormat.header($0, at: at) }
    }

    private func isValid(_ bytes: [UInt8], at: Int = 0, maxPayload: Int = 1 << 20) -> Bool {
        guard let header = header(bytes, at: at) else { return false }
        return bytes.withUnsafeBytes { BatchFormat.isValid($0, at: at, header, maxPayload: maxPayload) }
    }

    func testLayout() throws {
        let messages = [Array("one".utf8), [], Array("three".utf8)]
        let bytes = encoded(messages, first: 41).bytes
        let header = try XCTUnwrap(header(bytes))
        XCTAssertEqual(header.count, 3)
        XCTAssertEqual(header.firstOffset, 41)
        XCTAssertEqual(header.framedBytes, 4 + 1 + 6)
        XCTAssertEqual(bytes.count, BatchFormat.headerSize(count: 3) + 11)
        // The framed bytes are the messages as a reader gets them.
        XCTAssertEqual(Array(bytes[header.headerSize...]), Array("one\n\nthree\n".utf8))
        XCTAssertEqual(bytes.withUnsafeBytes { BatchFormat.Header.length($0, at: 0, message: 2) }, 5)
        XCTAssertTrue(isValid(bytes))
        XCTAssertTrue(isValid([0, 0, 0] + bytes, at: 3))
    }

    /// Any byte changed, anywhere in the batch, makes it invalid (the header included).
    func testEveryChangedByteIsFound() {
        let bytes = encoded([Array("alpha".utf8), Array("beta".utf8), Array("gamma gamma".utf8)], first: 7).bytes
        for at in bytes.indices {
            for flip: UInt8 in [0x01, 0x80, 0xFF] {
                var damaged = bytes
                damaged[at] ^= flip
                XCTAssertFalse(isValid(damaged), "byte \(at) changed by \(flip)")
            }
        }
    }

    /// A batch cut anywhere is not whole.
    func testCutBatchIsNotValid() {
        let bytes = encoded([Array("alpha".utf8), Array("beta".utf8)], first: 0).bytes
        for cut in 0..<bytes.count { XCTAssertFalse(isValid(Array(bytes[..<cut])), "cut at \(cut)") }
    }

    func testMessageOverTheLimitIsNotValid() {
        let bytes = encoded([[UInt8](repeating: 0x61, count: 100)], first: 0).bytes
        XCTAssertTrue(isValid(bytes, maxPayload: 100))
        XCTAssertFalse(isValid(bytes, maxPayload: 99))
    }

    /// A write becomes batches of at most `batchBytes` framed bytes, a longer message a batch of its own, and
    /// each batch's first offset follows the one before.
    func testLargeWritesSplitIntoBatches() throws {
        let small = [UInt8](repeating: 0x62, count: 999)
        let large = [UInt8](repeating: 0x63, count: 3 * BatchFormat.batchBytes)
        let messages = Array(repeating: small, count: 150) + [large] + Array(repeating: small, count: 10)
        let encoded = encoded(messages, first: 1000)
        XCTAssertEqual(encoded.batches.map(\.count), [65, 65, 20, 1, 10])
        var at = 0, offset: Int64 = 1000
        for batch in encoded.batches {
            let header = try XCTUnwrap(header(encoded.bytes, at: at))
            XCTAssertEqual(header.count, batch.count)
            XCTAssertEqual(header.size, batch.size)
            XCTAssertEqual(header.firstOffset, offset)
            XCTAssertLessThanOrEqual(header.framedBytes, max(BatchFormat.batchBytes, large.count + 1))
            XCTAssertTrue(isValid(encoded.bytes, at: at))
            at += batch.size
            offset += Int64(batch.count)
        }
        XCTAssertEqual(at, encoded.bytes.count)
    }

    /// Either format's file can be told from the other by its first bytes.
    func testFileHeaderIsNoRecordOfTheEarlierFormat() {
        BatchFormat.fileHeader.withUnsafeBytes { raw in
            XCTAssertTrue(BatchFormat.hasFileHeader(raw))
            XCTAssertEqual(RecordFormat.parse(raw, at: 0, maxPayload: Int(Int32.max)), .corrupt)
        }
        RecordFormat.encode([Array("earlier".utf8)]).withUnsafeBytes { XCTAssertFalse(BatchFormat.hasFileHeader($0)) }
    }
}
