/// One reader's position in a pipe, and the part of a message it has not delivered yet.
///
/// Every open handle owns a cursor, so every reader sees every message. A message goes out followed by a
/// newline; when the reader's buffer is smaller than that, the rest comes out on the next read.
///
/// A pipe may have several partitions (a Kafka topic made elsewhere with more than one). The cursor then holds
/// one offset per partition and takes from them in turn, one fetch from each per fill, so every partition's
/// messages come out in their order and no partition waits behind another; how partitions interleave
/// depends on when their messages arrived, and two readers may see different interleavings.
public struct ReadCursor: Sendable {
    /// The offset of the next message to fetch, per partition.
    public private(set) var offsets: [Int64]
    /// The partition the next fill asks first.
    private var nextPartition = 0
    /// Bytes of an already fetched message (with its newline) not yet handed out.
    private var carry: [UInt8] = []
    private var carryStart = 0
    /// Bytes of the stream to drop before the next byte handed out (a reader placed inside a message, or
    /// after an anchor that lies before its position).
    private var skip: Int64 = 0

    /// A cursor on a pipe of one partition.
    public init(offset: Int64) { self.init(offsets: [offset]) }

    public init(offsets: [Int64]) {
        precondition(!offsets.isEmpty, "a pipe has at least one partition")
        self.offsets = offsets
    }

    /// The offset in the first (for most pipes, the only) partition.
    public var offset: Int64 { offsets[0] }
    public var partitionCount: Int { offsets.count }
    public var hasCarry: Bool { carryStart < carry.count }

    /// Follows a pipe that gained partitions: a new one is read from `offset`.
    public mutating func addPartition(at offset: Int64) { offsets.append(offset) }

    /// Fills up to `capacity` bytes from a pipe of one partition (see the other `fill`).
    public mutating func fill(capacity: Int, fetch: (_ from: Int64, _ maxBytes: Int) throws -> MessageBatch?) rethrows -> [UInt8] {
        precondition(offsets.count == 1)
        return try fill(capacity: capacity) { _, from, maxBytes in try fetch(from, maxBytes) }
    }

    /// Fills up to `capacity` bytes: first the carried rest of a message, then messages from `fetch`, asked
    /// once per partition, starting where the last fill left off. `fetch` returns messages of that partition
    /// from the offset asked for on, with their offsets (which may start past the one asked for, after a
    /// reset). Returns an empty array when nothing is available.
    public mutating func fill(capacity: Int,
                              fetch: (_ partition: Int, _ from: Int64, _ maxBytes: Int) throws -> MessageBatch?) rethrows -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Swift.min(capacity, 1 << 20))
        if hasCarry {
            let n = Swift.min(capacity, carry.count - carryStart)
            out.append(contentsOf: carry[carryStart..<(carryStart + n)])
            carryStart += n
            if carryStart == carry.count { carry = []; carryStart = 0 }
            if out.count == capacity { return out }
        }
        if skip > 0, try !skipAhead(fetch: fetch) { return out }
        let count = offsets.count
        let first = nextPartition
        for step in 0..<count {
            let partition = (first + step) % count
            guard let batch = try fetch(partition, offsets[partition], capacity - out.count), !batch.isEmpty else { continue }
            // The next fill starts with the partition after this one.
            nextPartition = (partition + 1) % count
            if take(batch, into: &out, capacity: capacity, partition: partition) { break }
        }
        return out
    }

    /// Drops whole messages that lie before the position a seek asked for, fetching as many times as that
    /// takes; the message holding the position is then cut by `take`. Returns false when the store has
    /// nothing more yet. (Seeks are for pipes of one partition.)
    private mutating func skipAhead(fetch: (_ partition: Int, _ from: Int64, _ maxBytes: Int) throws -> MessageBatch?) rethrows -> Bool {
        while skip > 0 {
            guard let batch = try fetch(0, offsets[0], Int(Swift.min(skip, 1 << 20))), !batch.isEmpty else { return false }
            var index = 0
            while index < batch.count && skip > Int64(batch.block[index].count) {
                skip -= Int64(batch.block[index].count) + 1
                offsets[0] = batch.offsets[index] + 1
                index += 1
            }
            if index < batch.count { return true }
        }
        return true
    }

    /// Appends a batch's messages while they fit; returns whether the buffer is full (the rest of a message
    /// that did not fit waits in the carry, and messages after it are fetched again).
    private mutating func take(_ batch: MessageBatch, into out: inout [UInt8], capacity: Int, partition: Int) -> Bool {
        if batch.block.isFramed { return takeFramed(batch, into: &out, capacity: capacity, partition: partition) }
        var full = false
        var next = offsets[partition]
        // Copied from the batch's buffer in place: a slice per message would cost a retain and a release.
        batch.block.bytes.withUnsafeBufferPointer { all in
            for (index, range) in batch.block.ranges.enumerated() {
                var message = UnsafeBufferPointer(rebasing: all[range])
                next = batch.offsets[index] + 1
                if skip > 0 {
                    // skipAhead left at most this message's bytes to drop: its newline still comes out.
                    message = UnsafeBufferPointer(rebasing: message.dropFirst(Int(Swift.min(skip, Int64(message.count)))))
                    skip = 0
                }
                let room = capacity - out.count
                if message.count + 1 <= room {
                    out.append(contentsOf: message)
                    out.append(UInt8(ascii: "\n"))
                } else {
                    let n = Swift.min(room, message.count)
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: message.prefix(n)))
                    carry = Array(message.dropFirst(n))
                    carry.append(UInt8(ascii: "\n"))
                    carryStart = 0
                    full = true
                    break
                }
                if out.count == capacity { full = true; break }
            }
        }
        offsets[partition] = next
        return full
    }

    /// `take` for a framed block: messages that lie next to each other in its buffer, each with its newline,
    /// are copied out in one piece, and a block that holds nothing else, wholly taken, is not copied at all.
    private mutating func takeFramed(_ batch: MessageBatch, into out: inout [UInt8], capacity: Int, partition: Int) -> Bool {
        var full = false
        var next = offsets[partition]
        let wasEmpty = out.isEmpty
        var whole = false
        batch.block.bytes.withUnsafeBufferPointer { all in
            // The bytes of the messages taken so far and not yet copied out: `run` in `all`.
            var run = 0..<0
            var room = capacity - out.count
            for (index, range) in batch.block.ranges.enumerated() {
                var lower = range.lowerBound
                if skip > 0 {
                    // skipAhead left at most this message's bytes to drop: its newline still comes out.
                    lower += Int(Swift.min(skip, Int64(range.count)))
                    skip = 0
                }
                next = batch.offsets[index] + 1
                let framed = range.upperBound + 1 - lower
                if framed <= room {
                    if run.isEmpty || run.upperBound != lower {
                        out.append(contentsOf: UnsafeBufferPointer(rebasing: all[run]))
                        run = lower..<lower
                    }
                    run = run.lowerBound..<(range.upperBound + 1)
                    room -= framed
                } else {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: all[run]))
                    run = 0..<0
                    let n = Swift.min(room, range.upperBound - lower)
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: all[lower..<(lower + n)]))
                    carry = Array(all[(lower + n)...range.upperBound])
                    carryStart = 0
                    full = true
                    break
                }
                if room == 0 { full = true; break }
            }
            // A block that is nothing but the messages taken is handed out as it is.
            whole = wasEmpty && run == all.indices
            if !whole { out.append(contentsOf: UnsafeBufferPointer(rebasing: all[run])) }
        }
        if whole { out = batch.block.bytes }
        offsets[partition] = next
        return full
    }

    /// Moves the cursor of a pipe of one partition to `offset`, then `skip` bytes of the stream further.
    public mutating func seek(to offset: Int64, skip: Int64 = 0) {
        precondition(offsets.count == 1)
        offsets[0] = offset
        carry = []
        carryStart = 0
        self.skip = max(0, skip)
    }
}
