#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns the byte stream of one writer into messages: every complete line is one message, stored without its
/// newline. A partial line waits in the framer until its newline arrives, or until the writer flushes or
/// closes. One framer belongs to one open file handle, so lines from different writers never interleave.
public struct LineFramer: Sendable {
    /// The largest message, in bytes, without its newline.
    public let maxMessageBytes: Int
    /// Bytes of a line whose newline has not arrived yet.
    public private(set) var pending: [UInt8] = []

    /// Bytes of a refused line are dropped until its newline: a write carrying them is refused too.
    public private(set) var discarding = false

    public struct MessageTooLarge: Error, Equatable, CustomStringConvertible {
        public let size: Int
        public let limit: Int
        /// The refused line began in an earlier write (its start is the pending partial line).
        public var includesPending = false
        /// The refused line does not end in this write: its rest will come in later writes.
        public var continues = false
        public init(size: Int, limit: Int, includesPending: Bool = false, continues: Bool = false) {
            self.size = size
            self.limit = limit
            self.includesPending = includesPending
            self.continues = continues
        }
        public static func == (a: Self, b: Self) -> Bool { a.size == b.size && a.limit == b.limit }
        public var description: String { "a message of \(size)+ bytes exceeds the limit of \(limit) bytes" }
    }

    public init(maxMessageBytes: Int) {
        precondition(maxMessageBytes > 0)
        self.maxMessageBytes = maxMessageBytes
    }

    /// Frames one write. Either the whole write is accepted (its complete lines are returned, its tail kept as
    /// pending) or, if any line in it would exceed the limit, nothing changes and `MessageTooLarge` is thrown:
    /// the caller reports the error for the whole write, so nothing of it may be stored.
    ///
    /// The messages come back in one buffer (the pending start of the first line, then the write up to its
    /// last newline), so framing costs one copy of the write and no allocation per line.
    public mutating func frame(_ bytes: UnsafeRawBufferPointer) throws -> MessageBlock {
        let newline = UInt8(ascii: "\n")
        if discarding {
            if bytes.contains(newline) { discarding = false }
            throw MessageTooLarge(size: maxMessageBytes + 1, limit: maxMessageBytes)
        }
        // Validate every line before changing anything.
        var ends: [Int] = []
        var lineStart = 0
        var carried = pending.count
        while lineStart < bytes.count, let nl = Self.index(of: newline, in: bytes, from: lineStart) {
            let length = carried + (nl - lineStart)
            if length > maxMessageBytes {
                throw MessageTooLarge(size: length, limit: maxMessageBytes, includesPending: carried > 0)
            }
            ends.append(nl)
            carried = 0
            lineStart = nl + 1
        }
        let tail = carried + (bytes.count - lineStart)
        if tail > maxMessageBytes {
            throw MessageTooLarge(size: tail, limit: maxMessageBytes, includesPending: carried > 0, continues: true)
        }
        guard !ends.isEmpty else {
            pending.append(contentsOf: bytes)
            return MessageBlock()
        }
        // One buffer: pending, then the write through its last newline. Ranges leave the newlines out.
        let shift = pending.count
        var buffer = pending
        pending = []
        buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[0..<lineStart]))
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(ends.count)
        var start = 0
        for nl in ends {
            ranges.append(start..<(nl + shift))
            start = nl + shift + 1
        }
        pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[lineStart...]))
        return MessageBlock(bytes: buffer, ranges: ranges)
    }

    /// Frames a write given as an array (for tests and small inputs), returning each message on its own.
    public mutating func frame(_ bytes: [UInt8]) throws -> [[UInt8]] {
        try bytes.withUnsafeBytes { try frame($0) }.messages
    }

    private static func index(of byte: UInt8, in bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard let base = bytes.baseAddress, from < bytes.count,
              let hit = memchr(base + from, Int32(byte), bytes.count - from) else { return nil }
        return base.distance(to: UnsafeRawPointer(hit))
    }

    /// After a refused write: drops what is held of the refused line and, if the line goes on past that write,
    /// its rest, so that nothing of a too-large message is ever stored. (A write is split by the kernel at
    /// max_write, so one long line can arrive as an accepted piece followed by a refused one.)
    /// When the refused line began in an earlier write, the caller may be retrying the rest of a write the
    /// kernel cut short, so that rest (up to its newline) is refused as well.
    public mutating func abandon(_ refused: MessageTooLarge) {
        if refused.includesPending || refused.continues {
            pending = []
            discarding = true
        }
    }

    /// Ends the current partial line (on flush, fsync or close): returns it as a message, if there is one.
    public mutating func finish() -> [UInt8]? {
        guard !pending.isEmpty else { return nil }
        defer { pending = [] }
        return pending
    }
}
