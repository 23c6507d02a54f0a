import XCTest
import DNPipesTestSupport
@testable import DNPipesEmbedded

/// A bit-at-a-time CRC-32C (reflected polynomial 0x82F63B78), the reference for the table-driven version.
func referenceCRC32C(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
    var crc = ~seed
    for b in bytes {
        crc ^= UInt32(b)
        for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    }
    return ~crc
}

/// `CRC32C.checksum` computes CRC-32C (Castagnoli) as published, for any length and alignment.
final class CRC32CTests: XCTestCase {
    func testKnownVectors() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([]), 0)
        // RFC 3720 (iSCSI), appendix B.4.
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum((0..<32).map { UInt8($0) }), 0x46DD_794E)
        XCTAssertEqual(CRC32C.checksum((0..<32).map { UInt8(31 - $0) }), 0x113F_DB5C)
    }

    func testReferenceAgreesWithKnownVector() {
        XCTAssertEqual(referenceCRC32C(Array("123456789".utf8)), 0xE306_9283)
    }

    /// The checksum (the CPU instruction where there is one) and slicing-by-8 equal the bitwise reference on random buffers of every length 0...100 (covering the
    /// 8-byte loop, the byte tail and both together), also at unaligned start addresses.
    func testMatchesBitwiseReference() {
        var rng = SplitMix64(seed: 0x3C)
        for length in 0...100 {
            for _ in 0..<5 {
                let bytes = (0..<(length + 7)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let shift = Int.random(in: 0...7, using: &rng)
                let slice = Array(bytes[shift..<(shift + length)])
                XCTAssertEqual(CRC32C.checksum(slice), referenceCRC32C(slice), "length \(length)")
                let unaligned = bytes.withUnsafeBytes {
                    CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[shift..<(shift + length)]))
                }
                XCTAssertEqual(unaligned, referenceCRC32C(slice), "length \(length) at offset \(shift)")
                // The table-driven fallback too, where the CPU instruction is used by default.
                let software = bytes.withUnsafeBytes {
                    CRC32C.softwareChecksum(UnsafeRawBufferPointer(rebasing: $0[shift..<(shift + length)]))
                }
                XCTAssertEqual(software, referenceCRC32C(slice), "software, length \(length) at offset \(shift)")
            }
        }
    }

    /// The seed continues a checksum: crc(a + b) == crc(b, seed: crc(a)) (records rely on this).
    func testSeedChains() {
        var rng = SplitMix64(seed: 0x5EED)
        for _ in 0..<200 {
            let a = (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let b = (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            XCTAssertEqual(CRC32C.checksum(b, seed: CRC32C.checksum(a)), CRC32C.checksum(a + b))
            XCTAssertEqual(CRC32C.checksum(b, seed: 0x1234_5678), referenceCRC32C(b, seed: 0x1234_5678))
        }
    }
}
