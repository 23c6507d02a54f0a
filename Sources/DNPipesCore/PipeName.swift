/// The name of a pipe. Pipes are Kafka topics on the Kafka backend, so both backends accept exactly Kafka's
/// topic names: 1 to 249 characters from `[A-Za-z0-9._-]`, and never `.` or `..`. One rule for every backend
/// means a pipe directory can move between backends without renaming anything.
public struct PipeName: Hashable, Comparable, Sendable, CustomStringConvertible {
    public static let maxLength = 249

    public let value: String

    /// Why a candidate name was refused; the text is meant for a log line.
    public enum Invalid: Error, Equatable, CustomStringConvertible {
        case empty
        case tooLong(Int)
        case reserved(String)
        case badCharacter(Character)

        public var description: String {
            switch self {
            case .empty: return "a pipe name cannot be empty"
            case .tooLong(let n): return "a pipe name has at most \(PipeName.maxLength) characters, this one has \(n)"
            case .reserved(let s): return "'\(s)' is not a pipe name"
            case .badCharacter(let c):
                return "pipe names use only letters, digits, '.', '_' and '-' (found \(c.unicodeScalars.map { "U+" + String($0.value, radix: 16, uppercase: true) }.joined()))"
            }
        }
    }

    public init(validating raw: String) throws {
        if raw.isEmpty { throw Invalid.empty }
        if raw == "." || raw == ".." { throw Invalid.reserved(raw) }
        for c in raw where !PipeName.isAllowed(c) { throw Invalid.badCharacter(c) }
        // Allowed characters are all ASCII, so the UTF-8 length is the character count.
        if raw.utf8.count > PipeName.maxLength { throw Invalid.tooLong(raw.utf8.count) }
        value = raw
    }

    /// Validates raw bytes as they come from the kernel (not necessarily UTF-8).
    public init<Bytes: Collection>(validatingBytes bytes: Bytes) throws where Bytes.Element == UInt8 {
        for b in bytes where !PipeName.isAllowed(b) {
            throw Invalid.badCharacter(Character(Unicode.Scalar(b)))
        }
        try self.init(validating: String(decoding: bytes, as: UTF8.self))
    }

    public static func isAllowed(_ c: Character) -> Bool {
        guard c.isASCII, let b = c.asciiValue else { return false }
        return isAllowed(b)
    }

    public static func isAllowed(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    public var description: String { value }
    public static func < (a: PipeName, b: PipeName) -> Bool { a.value < b.value }
}
