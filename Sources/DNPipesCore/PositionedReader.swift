/// A reader that answers reads at file positions, so that a pipe is a seekable file to the programs that
/// treat every regular file as one: bash's `read` takes a buffer and seeks back to just after the line it
/// used, `head -n` puts back what it did not print, `tail -n` reads backwards from the size.
///
/// A position is a byte of the pipe's framed stream (see `StreamIndex`) plus a per-reader `shift`: 0 for a
/// reader from the oldest message; minus the stream's size at open for a `.tail` reader (its position 0 is
/// the end); a reader that lives through a reset goes on in the new stream at the position it had, as a
/// reader of a truncated file would if it kept reading.
///
/// Reads in small buffers (bash's 4 KiB, head's 8 KiB) are served from a buffer of the bytes from the last
/// read's start on, filled 64 KiB at a time: such programs read again a little before where the last read
/// ended (bash after every line), and one store fetch then serves hundreds of reads. Large reads (cat's
/// 1 MiB) go straight to the cursor. Any other position is found through the backend's anchors and read
/// from there. A backend that does not know positions, or a pipe of several partitions, gives a reader that
/// counts its own bytes: seeks outside the buffer are then not honoured and reading goes on where the
/// cursor stands.
public struct PositionedReader: Sendable {
    public typealias Outcome = PipeReader.Outcome

    private var reader: PipeReader
    /// The file position the cursor stands at: the next byte a sequential read gets.
    public private(set) var position: Int64 = 0
    /// File position minus stream position.
    private var shift: Int64 = 0
    /// The stream origin positions refer to; nil for a reader that counts its own bytes.
    private var origin: Int64?
    /// Bytes from file position `bufferStart` up to `position` (where the cursor stands), already taken from
    /// the cursor: what a small read gets first.
    private var buffer: [UInt8] = []
    private var bufferStart: Int64 = 0
    static let bufferLimit = 64 << 10
    /// Where the last reply ended: the file position of a caller that reads on without seeking.
    private var replied: Int64 = 0

    public init(log: PipeLog, start: PipeReader.Start, stopAtEnd: Bool) {
        reader = PipeReader(log: log, start: start, stopAtEnd: stopAtEnd)
        guard log.partitionCount <= 1, let extent = log.streamExtent() else { return }
        switch start {
        case .oldest:
            origin = extent.origin
            reader.seek(to: extent.origin)
        case .end:
            // Position 0 is the end: its stream position is the size, if every byte up to it is counted.
            guard extent.countedEnd == reader.offset else { return }
            origin = extent.origin
            shift = -extent.size
        }
    }

    public var log: PipeLog { reader.log }

    /// Takes what the reader can have at file position `offset`, up to `capacity` bytes. `whole`: a reply
    /// shorter than `capacity` only at the end (a reader whose replies the kernel caches takes a short one
    /// for the end of the file); until the bytes are there the answer is `.nothing`.
    public mutating func read(at offset: Int64, capacity: Int, whole: Bool = false) throws -> Outcome {
        // A reset that lands while the read runs would mix positions of two streams: then read again (a few
        // times at most; the last attempt keeps what it read).
        var attempt = 0
        while true {
            attempt += 1
            let before = self
            if let origin, let current = reader.log.streamExtent()?.origin, current != origin {
                restart(at: current, position: offset)
            }
            let outcome: Outcome
            do {
                outcome = whole ? try readWhole(at: offset, capacity: capacity) : try readHere(at: offset, capacity: capacity)
            } catch {
                // A failed fetch changes nothing: the next read starts from the same state.
                self = before
                throw error
            }
            if attempt < 5, let origin, let current = reader.log.streamExtent()?.origin, current != origin {
                self = before
                continue
            }
            return outcome
        }
    }

    /// Whether a read where the last one ended would return at once (for poll): buffered bytes are there.
    public func isReadable() -> Bool { (replied >= bufferStart && replied < position) || reader.isReadable() }

    private mutating func readHere(at offset: Int64, capacity: Int) throws -> Outcome {
        if offset < bufferStart || offset > position { relocate(to: offset) }
        var have = Int(position - offset)
        var last: Outcome?
        if have < capacity {
            if capacity <= PositionedReader.bufferLimit {
                // Keep what lies at and after the read, and top up from the cursor.
                buffer.removeFirst(Int(offset - bufferStart))
                bufferStart = offset
                // Until the read can be answered whole (a program that reads a regular file at a position,
                // as tail does, counts on a full read where the file has the bytes).
                while have < capacity {
                    let outcome = try reader.read(capacity: PositionedReader.bufferLimit - have)
                    guard case .data(let bytes) = outcome else { last = outcome; break }
                    buffer += bytes
                    position += Int64(bytes.count)
                    have += bytes.count
                }
            } else {
                // A large read streams: the buffer's rest, then one fill of the cursor (what the store had in
                // one piece: a reply need not be full, and a reader of a megabyte at a time holds less), and
                // nothing kept.
                var out = Array(buffer[Int(offset - bufferStart)...])
                buffer = []
                let outcome = try reader.read(capacity: capacity - out.count)
                if case .data(let bytes) = outcome {
                    if out.isEmpty { out = bytes } else { out += bytes }
                    position += Int64(bytes.count)
                }
                bufferStart = position
                replied = position
                if out.isEmpty { return outcome }
                return .data(out)
            }
        }
        guard have > 0 else { return last ?? .nothing }
        let from = Int(offset - bufferStart)
        let count = min(have, capacity)
        replied = offset + Int64(count)
        return .data(Array(buffer[from..<(from + count)]))
    }

    /// Fills the buffer from `offset` until it holds `capacity` bytes or the end, and answers from it. A
    /// cursor that must wait for more leaves what it took in the buffer, for the same read asked again.
    private mutating func readWhole(at offset: Int64, capacity: Int) throws -> Outcome {
        if offset < bufferStart || offset > position { relocate(to: offset) }
        buffer.removeFirst(Int(offset - bufferStart))
        bufferStart = offset
        while position - offset < capacity {
            let outcome = try reader.read(capacity: capacity - Int(position - offset))
            guard case .data(let bytes) = outcome else {
                if case .endOfFile = outcome { break }
                return outcome
            }
            if buffer.isEmpty { buffer = bytes } else { buffer += bytes }
            position += Int64(bytes.count)
        }
        let count = min(Int(position - offset), capacity)
        guard count > 0 else { return .endOfFile }
        // A read answered by what one fetch brought hands its bytes on without copying them.
        var out: [UInt8] = []
        if count == buffer.count { swap(&out, &buffer) } else { out = Array(buffer[0..<count]); buffer.removeFirst(count) }
        bufferStart += Int64(count)
        replied = bufferStart
        return .data(out)
    }

    /// Places the cursor at file position `offset`.
    private mutating func relocate(to offset: Int64) {
        if let origin, reader.partitionCount == 1 {
            var target = offset - shift
            if target < 0 {
                // Before the start of this reader's stream: read it from its start, here.
                shift = offset
                target = 0
            }
            if let anchor = reader.log.streamAnchor(atOrBefore: target), anchor.origin == origin {
                reader.seek(to: anchor.offset, skip: target - anchor.byte)
                buffer = []
                position = offset
                bufferStart = offset
                replied = offset
                return
            }
        }
        // Positions not known here: go on where the last reply ended, as if the caller had not moved.
        let moved = offset - replied
        shift += moved
        bufferStart += moved
        position += moved
        replied = offset
    }

    /// The pipe was reset: the reader goes on at file position `position` in the new stream, from its start.
    private mutating func restart(at newOrigin: Int64, position: Int64) {
        guard reader.partitionCount == 1 else { origin = nil; return }
        reader.seek(to: newOrigin)
        origin = newOrigin
        shift = position
        self.position = position
        bufferStart = position
        replied = position
        buffer = []
    }
}
