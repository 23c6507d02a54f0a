/// Messages packed into one buffer: what one write brings, framed. Message `i` is `bytes[ranges[i]]`.
///
/// A write of 128 KiB holds about a thousand lines; keeping them in one buffer, with a range each, costs two
/// allocations per write instead of one per message, and backends read the payloads in place.
///
/// A block may be *framed*: every message's bytes are followed in the buffer by a newline, so messages that
/// lie next to each other are already the bytes a reader gets, copied out in one piece (a backend that keeps
/// messages that way, as the embedded store's batches do, hands out the buffer it read).
public struct MessageBlock: Sendable, Equatable {
    public private(set) var bytes: [UInt8]
    public private(set) var ranges: [Range<Int>]
    /// Whether a newline follows every message in `bytes`.
    public private(set) var isFramed = false

    public init() {
        bytes = []
        ranges = []
    }

    /// Takes a buffer and the ranges of its messages (ascending, within the buffer).
    public init(bytes: [UInt8], ranges: [Range<Int>]) {
        self.bytes = bytes
        self.ranges = ranges
    }

    /// Takes a buffer in which a newline follows each of the messages at `ranges` (ascending, within it):
    /// the caller makes sure of it (the embedded store checks every batch it hands out so).
    public init(framedIn bytes: [UInt8], ranges: [Range<Int>]) {
        assert(ranges.allSatisfy { $0.upperBound < bytes.count && bytes[$0.upperBound] == UInt8(ascii: "\n") },
               "a framed block has a newline after every message")
        self.bytes = bytes
        self.ranges = ranges
        isFramed = true
    }

    public init(_ messages: [[UInt8]]) {
        self.init()
        bytes.reserveCapacity(messages.reduce(0) { $0 + $1.count })
        ranges.reserveCapacity(messages.count)
        for m in messages { append(m) }
    }

    public var count: Int { ranges.count }
    public var isEmpty: Bool { ranges.isEmpty }
    /// Payload bytes of all messages together.
    public var payloadBytes: Int { ranges.reduce(0) { $0 + $1.count } }
    /// The largest message, in bytes.
    public var largest: Int { ranges.reduce(0) { Swift.max($0, $1.count) } }

    public subscript(index: Int) -> ArraySlice<UInt8> { bytes[ranges[index]] }

    /// Each message as an array of its own (for tests and small batches).
    public var messages: [[UInt8]] { ranges.map { Array(bytes[$0]) } }

    public mutating func append(_ message: [UInt8]) {
        message.withUnsafeBytes { append($0) }
    }

    public mutating func append(_ message: ArraySlice<UInt8>) {
        message.withUnsafeBytes { append($0) }
    }

    public mutating func append(_ message: UnsafeRawBufferPointer) {
        isFramed = false
        let start = bytes.count
        bytes.append(contentsOf: message)
        ranges.append(start..<bytes.count)
    }

    /// The messages after the first `n`, sharing this block's buffer.
    public func droppingFirst(_ n: Int) -> MessageBlock {
        var rest = MessageBlock(bytes: bytes, ranges: Array(ranges.dropFirst(n)))
        rest.isFramed = isFramed
        return rest
    }

    /// Keeps the first `n` messages (their bytes stay in the buffer, unreferenced).
    public mutating func keepFirst(_ n: Int) {
        ranges.removeLast(ranges.count - n)
    }

    /// Calls `body` with each message's bytes in place, in order.
    public func forEachPayload(_ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        try bytes.withUnsafeBytes { raw in
            for r in ranges { try body(UnsafeRawBufferPointer(rebasing: raw[r])) }
        }
    }
}
