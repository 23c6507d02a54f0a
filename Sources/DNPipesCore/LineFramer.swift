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
    public mutating func frame<Bytes: RandomAccessCollection>(_ bytes: Bytes) throws -> [[UInt8]]
    where Bytes.Element == UInt8, Bytes.Index == Int {
        if discarding {
            if bytes.contains(UInt8(ascii: "\n")) { discarding = false }
            throw MessageTooLarge(size: maxMessageBytes + 1, limit: maxMessageBytes)
        }
        var messages: [[UInt8]] = []
        var lineStart = bytes.startIndex
        var carried = pending.count
        // Validate and cut in one pass; commit only if every line fits.
        var cuts: [Range<Int>] = []
        var i = bytes.startIndex
        while let nl = bytes[i...].firstIndex(of: UInt8(ascii: "\n")) {
            let length = carried + (nl - lineStart)
            if length > maxMessageBytes {
                throw MessageTooLarge(size: length, limit: maxMessageBytes, includesPending: carried > 0)
            }
            cuts.append(lineStart..<nl)
            carried = 0
            lineStart = nl + 1
            i = nl + 1
        }
        let tail = carried + (bytes.endIndex - lineStart)
        if tail > maxMessageBytes {
            throw MessageTooLarge(size: tail, limit: maxMessageBytes, includesPending: carried > 0, continues: true)
        }

        messages.reserveCapacity(cuts.count)
        for (n, cut) in cuts.enumerated() {
            if n == 0 && !pending.isEmpty {
                var m = pending
                m.append(contentsOf: bytes[cut])
                messages.append(m)
                pending.removeAll(keepingCapacity: false)
            } else {
                messages.append(Array(bytes[cut]))
            }
        }
        pending.append(contentsOf: bytes[lineStart...])
        return messages
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
