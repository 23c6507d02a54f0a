import XCTest
import DNPipesTestSupport
@testable import DNPipesEmbedded

/// `RecordFormat`: `crc32c | length | payload`, little-endian; parse finds whole records, refuses damaged ones
/// as `.corrupt` and short ones as `.incomplete`; `validPrefix` is the longest run of whole valid records.
final class RecordFormatTests: XCTestCase {
    private func parse(_ buffer: [UInt8], at: Int = 0, maxPayload: Int = 1 << 20, verify: Bool = true) -> RecordFormat.Parsed {
        buffer.withUnsafeBytes { RecordFormat.parse($0, at: at, maxPayload: maxPayload, verify: verify) }
    }

    private func validPrefix(_ buffer: [UInt8], maxPayload: Int = 1 << 20) -> (records: Int, bytes: Int) {
        buffer.withUnsafeBytes { RecordFormat.validPrefix($0, maxPayload: maxPayload) }
    }

    private func randomPayloads(_ n: Int, maxLength: Int, using rng: inout SplitMix64) -> [[UInt8]] {
        (0..<n).map { _ in (0..<Int.random(in: 0...maxLength, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
    }

    /// The header is the CRC-32C of length+payload, then the length, both little-endian.
    func testLayout() {
        let payload = Array("hello".utf8)
        let encoded = RecordFormat.encode([payload])
        XCTAssertEqual(encoded.count, RecordFormat.headerSize + payload.count)
        XCTAssertEqual(Array(encoded[4..<8]), [5, 0, 0, 0])
        let crc = referenceCRC32C(Array(encoded[4...]))
        XCTAssertEqual(Array(encoded[0..<4]), [UInt8(crc & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8((crc >> 16) & 0xFF), UInt8(crc >> 24)])
        XCTAssertEqual(Array(encoded[8...]), payload)
    }

    /// Every encoded record parses back to its payload, at its own position in a multi-record buffer.
    func testRoundTrip() {
        var rng = SplitMix64(seed: 1)
        let payloads = [[]] + randomPayloads(50, maxLength: 300, using: &rng)
        let encoded = RecordFormat.encode(payloads)
        var at = 0
        for p in payloads {
            guard case .record(let range, let size) = parse(encoded, at: at) else {
                return XCTFail("no record at \(at)")
            }
            XCTAssertEqual(Array(encoded[range]), p)
            XCTAssertEqual(size, p.count + RecordFormat.headerSize)
            at += size
        }
        XCTAssertEqual(at, encoded.count)
        XCTAssertEqual(parse(encoded, at: at), .incomplete(needed: nil))
    }

    /// Flipping any single bit of the checksum, the length or the payload makes the record corrupt. The buffer
    /// has room after the record so that a larger length is still checked, not taken as incomplete.
    func testFlippedBitIsCorrupt() {
        let payload = Array("0123456789".utf8)
        let record = RecordFormat.encode([payload])
        let buffer = record + [UInt8](repeating: 0xA5, count: 200)
        XCTAssertEqual(parse(buffer, maxPayload: 100), .record(payload: 8..<18, size: 18))
        for byte in 0..<record.count {
            for bit in 0..<8 {
                var damaged = buffer
                damaged[byte] ^= 1 << bit
                XCTAssertEqual(parse(damaged, maxPayload: 100), .corrupt, "bit \(bit) of byte \(byte)")
            }
        }
    }

    /// Without verification a damaged payload still parses (the length is still bounded).
    func testVerifyFalseSkipsChecksum() {
        var record = RecordFormat.encode([Array("abc".utf8)])
        record[9] ^= 0xFF
        XCTAssertEqual(parse(record), .corrupt)
        XCTAssertEqual(parse(record, verify: false), .record(payload: 8..<11, size: 11))
    }

    /// A length above `maxPayload` is corrupt even before the bytes are there.
    func testAbsurdLengthIsCorrupt() {
        let record = RecordFormat.encode([[UInt8](repeating: 7, count: 101)])
        XCTAssertEqual(parse(record, maxPayload: 100), .corrupt)
        XCTAssertEqual(parse(Array(record[0..<8]), maxPayload: 100), .corrupt)
        XCTAssertEqual(parse(record, maxPayload: 101), .record(payload: 8..<109, size: 109))
    }

    /// A record cut anywhere is incomplete; once the header is there, the needed size is known.
    func testTruncatedIsIncomplete() {
        let record = RecordFormat.encode([Array("some payload".utf8)])
        for cut in 0..<record.count {
            let expected: RecordFormat.Parsed = cut < RecordFormat.headerSize ? .incomplete(needed: nil)
                                                                               : .incomplete(needed: record.count)
            XCTAssertEqual(parse(Array(record[0..<cut])), expected, "cut at \(cut)")
        }
    }

    /// Property: an encoded log cut at every byte position has a valid prefix of exactly the records wholly
    /// before the cut.
    func testValidPrefixAtEveryCut() {
        var rng = SplitMix64(seed: 99)
        for _ in 0..<20 {
            let payloads = randomPayloads(Int.random(in: 0...12, using: &rng), maxLength: 40, using: &rng)
            let log = RecordFormat.encode(payloads)
            for cut in 0...log.count {
                var whole = 0, bytes = 0
                for p in payloads {
                    if bytes + p.count + RecordFormat.headerSize > cut { break }
                    bytes += p.count + RecordFormat.headerSize
                    whole += 1
                }
                let prefix = validPrefix(Array(log[0..<cut]))
                XCTAssertEqual(prefix.records, whole, "cut \(cut) of \(log.count)")
                XCTAssertEqual(prefix.bytes, bytes, "cut \(cut) of \(log.count)")
            }
        }
    }

    /// The valid prefix stops at the first damaged record, even when whole valid records follow it.
    func testValidPrefixStopsAtCorruption() {
        let payloads = (0..<5).map { Array("record \($0)".utf8) }
        var log = RecordFormat.encode(payloads)
        let third = 2 * (8 + payloads[0].count)
        log[third + 9] ^= 0x01
        let prefix = validPrefix(log)
        XCTAssertEqual(prefix.records, 2)
        XCTAssertEqual(prefix.bytes, third)
        XCTAssertEqual(validPrefix(log + [1, 2, 3]).records, 2)
        XCTAssertEqual(validPrefix([]).records, 0)
    }
}
