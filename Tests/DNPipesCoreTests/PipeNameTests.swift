import XCTest
import DNPipesTestSupport
@testable import DNPipesCore

/// `PipeName` accepts exactly Kafka's topic names: 1...249 characters from `[A-Za-z0-9._-]`, never `.` or `..`.
final class PipeNameTests: XCTestCase {
    private func refusal(_ raw: String, file: StaticString = #filePath, line: UInt = #line) -> PipeName.Invalid? {
        do {
            _ = try PipeName(validating: raw)
            XCTFail("'\(raw)' was accepted", file: file, line: line)
            return nil
        } catch let error as PipeName.Invalid {
            return error
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
            return nil
        }
    }

    private func refusal(bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> PipeName.Invalid? {
        do {
            _ = try PipeName(validatingBytes: bytes)
            XCTFail("\(bytes) was accepted", file: file, line: line)
            return nil
        } catch let error as PipeName.Invalid {
            return error
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
            return nil
        }
    }

    /// Every allowed character, alone and together, makes a valid name that keeps its spelling.
    func testAcceptsTheKafkaAlphabet() throws {
        let alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
        XCTAssertEqual(try PipeName(validating: alphabet).value, alphabet)
        for c in alphabet where c != "." {
            XCTAssertEqual(try PipeName(validating: String(c)).value, String(c))
        }
        for raw in ["...", ".a", "a.", "..a", "-", "_", "logs.2024-01_x"] {
            XCTAssertEqual(try PipeName(validating: raw).value, raw)
            XCTAssertEqual(try PipeName(validatingBytes: Array(raw.utf8)).value, raw)
        }
    }

    /// The length limit is 249 inclusive.
    func testLengthLimit() throws {
        let longest = String(repeating: "x", count: 249)
        XCTAssertEqual(try PipeName(validating: longest).value, longest)
        XCTAssertEqual(try PipeName(validatingBytes: Array(longest.utf8)).value, longest)
        XCTAssertEqual(refusal(String(repeating: "x", count: 250)), .tooLong(250))
        XCTAssertEqual(refusal(bytes: [UInt8](repeating: UInt8(ascii: "y"), count: 250)), .tooLong(250))
        XCTAssertEqual(refusal(String(repeating: "x", count: 1000)), .tooLong(1000))
    }

    func testRefusesEmptyAndDotNames() {
        XCTAssertEqual(refusal(""), .empty)
        XCTAssertEqual(refusal(bytes: []), .empty)
        XCTAssertEqual(refusal("."), .reserved("."))
        XCTAssertEqual(refusal(".."), .reserved(".."))
        XCTAssertEqual(refusal(bytes: [UInt8]("..")), .reserved(".."))
    }

    func testRefusesSeparatorsAndControlCharacters() {
        XCTAssertEqual(refusal("a b"), .badCharacter(" "))
        XCTAssertEqual(refusal("a/b"), .badCharacter("/"))
        XCTAssertEqual(refusal("/"), .badCharacter("/"))
        XCTAssertEqual(refusal("a\0b"), .badCharacter("\0"))
        XCTAssertEqual(refusal("a\nb"), .badCharacter("\n"))
        XCTAssertEqual(refusal("a\r\nb"), .badCharacter("\r\n"))
        XCTAssertEqual(refusal("a:b"), .badCharacter(":"))
        XCTAssertEqual(refusal(bytes: [UInt8(ascii: "a"), 0, UInt8(ascii: "b")]), .badCharacter("\0"))
        XCTAssertEqual(refusal(bytes: [UInt8]("a/b")), .badCharacter("/"))
        // A bad character is reported even when the name is also too long.
        XCTAssertEqual(refusal(String(repeating: "x", count: 300) + " "), .badCharacter(" "))
    }

    func testRefusesNonASCII() {
        XCTAssertEqual(refusal("café"), .badCharacter("é"))
        XCTAssertEqual(refusal("e\u{301}"), .badCharacter("e\u{301}"))
        XCTAssertEqual(refusal("ｆｕｌｌ"), .badCharacter("ｆ"))
        // Raw bytes: the first non-ASCII byte is reported, whether or not the bytes are valid UTF-8.
        XCTAssertEqual(refusal(bytes: [UInt8]("caf") + [0xC3, 0xA9]), .badCharacter(Character(Unicode.Scalar(0xC3))))
        XCTAssertEqual(refusal(bytes: [0xFF]), .badCharacter(Character(Unicode.Scalar(0xFF))))
        XCTAssertEqual(refusal(bytes: [UInt8(ascii: "a"), 0x80]), .badCharacter(Character(Unicode.Scalar(0x80))))
    }

    /// `isAllowed` on bytes and on characters agrees with the alphabet, for all 256 byte values.
    func testIsAllowedMatchesAlphabetForEveryByte() {
        let alphabet = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-".utf8)
        for b in 0...255 {
            let byte = UInt8(b)
            XCTAssertEqual(PipeName.isAllowed(byte), alphabet.contains(byte), "byte \(b)")
            XCTAssertEqual(PipeName.isAllowed(Character(Unicode.Scalar(byte))), alphabet.contains(byte), "character \(b)")
        }
    }

    /// Both initialisers agree on random byte strings drawn mostly from the alphabet.
    func testStringAndByteValidationAgree() {
        var rng = SplitMix64(seed: 7)
        let pool = Array("ab.-_Z9 /".utf8) + [0, 0xC3, 0xA9]
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...4, using: &rng)).map { _ in pool.randomElement(using: &rng)! }
            let fromBytes = Result { try PipeName(validatingBytes: bytes) }
            let ascii = bytes.allSatisfy { $0 < 0x80 }
            if ascii {
                let fromString = Result { try PipeName(validating: String(decoding: bytes, as: UTF8.self)) }
                switch (fromBytes, fromString) {
                case (.success(let a), .success(let b)): XCTAssertEqual(a, b)
                case (.failure(let a), .failure(let b)): XCTAssertEqual(a as? PipeName.Invalid, b as? PipeName.Invalid)
                default: XCTFail("disagreement on \(bytes)")
                }
            } else {
                XCTAssertThrowsError(try fromBytes.get(), "\(bytes)")
            }
        }
    }

    func testOrderingAndDescription() throws {
        let a = try PipeName(validating: "a"), b = try PipeName(validating: "b"), upper = try PipeName(validating: "B")
        XCTAssertLessThan(a, b)
        XCTAssertLessThan(upper, a)
        XCTAssertEqual([b, a, upper].sorted().map(\.value), ["B", "a", "b"])
        XCTAssertEqual(a.description, "a")
        XCTAssertTrue(PipeName.Invalid.tooLong(250).description.contains("250"))
        XCTAssertTrue(PipeName.Invalid.badCharacter(" ").description.contains("U+20"))
    }
}
