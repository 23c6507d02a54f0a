#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Byte positions in a pipe's framed stream: every message followed by its newline, as a reader gets it.
///
/// Positions count from the stream's origin, the oldest offset after the last reset, so a pipe looks like a
/// file to programs that seek (bash's `read`, `head`, `tail`): its size is where the stream ends, and a read
/// at any position is served from there. A reset starts the stream again at 0, which to a program that
/// follows the size (`tail -F`) is a truncation.
///
/// The index keeps one anchor (offset, byte position) every `stride` messages, so finding the message that
/// holds a position reads at most `stride` messages from its anchor, and memory stays a small fraction of
/// the messages' own.
public struct StreamIndex: Sendable {
    public static let stride = 64

    /// The offset at byte 0: the pipe's oldest offset after its last reset.
    public private(set) var origin: Int64
    /// Every message below this offset is counted.
    public private(set) var next: Int64
    /// Bytes of the framed messages in `origin ..< next`.
    public private(set) var size: Int64 = 0
    private var counted = 0
    private var anchorOffsets: [Int64] = []
    private var anchorBytes: [Int64] = []

    public init(origin: Int64) {
        self.origin = origin
        next = origin
    }

    /// Counts the message at `offset` with `length` payload bytes. Offsets below `next` were counted already
    /// (a refetch) and are ignored; offsets may have gaps (control records take offsets but are not messages).
    public mutating func note(offset: Int64, length: Int) {
        guard offset >= next else { return }
        if counted % StreamIndex.stride == 0 {
            anchorOffsets.append(offset)
            anchorBytes.append(size)
        }
        counted += 1
        size += Int64(length) + 1
        next = offset + 1
    }

    /// The stream has passed offsets that hold no message (a marker, control records) up to `offset`.
    public mutating func pass(to offset: Int64) { next = max(next, offset) }

    /// A reset: the stream starts again, empty, at `origin`.
    public mutating func restart(at origin: Int64) {
        self = StreamIndex(origin: origin)
    }

    /// The last anchor at or before `byte`: a message offset and the position where that message starts.
    public func anchor(atOrBefore byte: Int64) -> StreamAnchor {
        var lo = 0, hi = anchorBytes.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if anchorBytes[mid] <= byte { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return StreamAnchor(origin: origin, offset: origin, byte: 0) }
        return StreamAnchor(origin: origin, offset: anchorOffsets[lo - 1], byte: anchorBytes[lo - 1])
    }

    /// What a stat reports.
    public func extent(lastPush: timespec?) -> StreamExtent {
        StreamExtent(origin: origin, countedEnd: next, size: size, lastPush: lastPush)
    }
}

/// A known position in a stream: the message at `offset` starts at `byte` of the stream since `origin`.
public struct StreamAnchor: Sendable, Equatable {
    public var origin: Int64
    public var offset: Int64
    public var byte: Int64
    public init(origin: Int64, offset: Int64, byte: Int64) {
        self.origin = origin
        self.offset = offset
        self.byte = byte
    }
}

/// A pipe's stream as a stat shows it.
public struct StreamExtent: Sendable {
    /// The offset at byte 0 (see `StreamIndex.origin`).
    public var origin: Int64
    /// Messages below this offset are counted in `size`; past it the backend has not seen them yet.
    public var countedEnd: Int64
    public var size: Int64
    /// When the newest message was pushed, if known (the file's mtime).
    public var lastPush: timespec?
    public init(origin: Int64, countedEnd: Int64, size: Int64, lastPush: timespec?) {
        self.origin = origin
        self.countedEnd = countedEnd
        self.size = size
        self.lastPush = lastPush
    }

    /// The current time, for a push made now: the kernel's coarse clock, which stamps local files, so that
    /// a pipe pushed to after a file was touched is newer than it (`find -newer`, `make`), never older by
    /// the few milliseconds the precise clock runs ahead.
    public static func now() -> timespec {
        var t = timespec()
        #if os(Linux)
        clock_gettime(CLOCK_REALTIME_COARSE, &t)
        #else
        clock_gettime(CLOCK_REALTIME, &t)
        #endif
        return t
    }
}
