/// One reader's position in a pipe, and the part of a message it has not delivered yet.
///
/// Every open handle owns a cursor, so every reader sees every message. A message goes out followed by a
/// newline; when the reader's buffer is smaller than that, the rest comes out on the next read.
public struct ReadCursor: Sendable {
    /// The offset of the next message to fetch from the store.
    public private(set) var offset: Int64
    /// Bytes of an already fetched message (with its newline) not yet handed out.
    private var carry: [UInt8] = []
    private var carryStart = 0

    public init(offset: Int64) { self.offset = offset }

    public var hasCarry: Bool { carryStart < carry.count }

    /// Fills up to `capacity` bytes: first the carried rest of a message, then messages from `fetch`, which is
    /// asked for messages starting at the cursor's offset and returns them with their offsets (which may start
    /// past the one asked for, after a reset). Returns an empty array when nothing is available.
    public mutating func fill(capacity: Int, fetch: (_ from: Int64, _ maxBytes: Int) throws -> MessageBatch?) rethrows -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Swift.min(capacity, 1 << 16))
        if hasCarry {
            let n = Swift.min(capacity, carry.count - carryStart)
            out.append(contentsOf: carry[carryStart..<(carryStart + n)])
            carryStart += n
            if carryStart == carry.count { carry = []; carryStart = 0 }
            if out.count == capacity { return out }
        }
        guard let batch = try fetch(offset, capacity - out.count), !batch.isEmpty else { return out }
        var next = offset
        for index in 0..<batch.count {
            let message = batch.block[index]
            next = batch.offsets[index] + 1
            let room = capacity - out.count
            if message.count + 1 <= room {
                out.append(contentsOf: message)
                out.append(UInt8(ascii: "\n"))
            } else {
                // Hand out what fits; the rest waits in the carry. Messages after this one are fetched again.
                let n = Swift.min(room, message.count)
                out.append(contentsOf: message.prefix(n))
                carry = Array(message.dropFirst(n))
                carry.append(UInt8(ascii: "\n"))
                carryStart = 0
                break
            }
            if out.count == capacity { break }
        }
        offset = next
        return out
    }

    /// Moves the cursor (for a reader that starts at the end of a pipe).
    public mutating func seek(to offset: Int64) {
        self.offset = offset
        carry = []
        carryStart = 0
    }
}
