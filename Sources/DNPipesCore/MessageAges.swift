/// When a pipe's messages were pushed, coarsely: enough to tell which have outlived a retention without
/// reading them, and where in the stream the first one kept begins.
///
/// Each entry covers the offsets from its own up to the next entry's and holds the time of the newest
/// message among them, so a message is never taken for older than it is: an entry expires, whole, once its
/// newest message has. Pushes within `granularity` of an entry's first one join it, so a busy pipe adds one
/// entry per `granularity`, not one per push, and the entries below the oldest offset are dropped.
public struct MessageAges: Sendable {
    public struct Entry: Sendable, Equatable {
        /// The first offset the entry covers.
        public var offset: Int64
        /// Milliseconds since the epoch of the newest message it covers.
        public var newest: Int64
        /// Where the entry's first message starts in the stream (see `StreamIndex`).
        public var byte: Int64
        /// Milliseconds since the epoch of its first message: pushes join the entry within `granularity` of it.
        var first: Int64
    }

    public private(set) var entries: [Entry] = []
    public var retention: Retention
    /// How long one entry spans at most: a message may outlive its retention by up to this much.
    public var granularity: Int64 { retention.seconds == nil ? 60_000 : 1_000 }

    public init(retention: Retention = .none) { self.retention = retention }

    /// Messages from `offset` on were pushed at `millis` at the latest, starting at stream byte `byte`.
    public mutating func note(offset: Int64, millis: Int64, byte: Int64) {
        if var last = entries.last {
            if offset <= last.offset || millis - last.first < granularity {
                last.newest = max(last.newest, millis)
                entries[entries.count - 1] = last
                return
            }
        }
        entries.append(Entry(offset: offset, newest: millis, byte: byte, first: millis))
    }

    /// A reset: the pipe starts again, empty, at `offset`.
    public mutating func restart(at offset: Int64) { entries.removeAll() }

    /// The offset of the first message not expired at `nowMillis`: `end` if all are, `oldest` if no retention
    /// is set or none has expired. Offsets not covered by an entry (none noted) count as new.
    public func firstKept(oldest: Int64, end: Int64, nowMillis: Int64) -> Int64 {
        guard let cutoff = retention.cutoff(nowMillis: nowMillis), !entries.isEmpty else { return oldest }
        guard let index = firstKeptIndex(cutoff: cutoff) else { return max(oldest, end) }
        return max(oldest, entries[index].offset)
    }

    /// The stream byte where offset `offset` begins, if an entry starts there.
    public func byte(at offset: Int64) -> Int64? {
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].offset < offset { lo = mid + 1 } else { hi = mid }
        }
        return lo < entries.count && entries[lo].offset == offset ? entries[lo].byte : nil
    }

    /// Drops entries wholly below `offset` (the pipe's oldest offset moved past them).
    public mutating func forget(below offset: Int64) {
        var drop = 0
        while drop + 1 < entries.count && entries[drop + 1].offset <= offset { drop += 1 }
        if drop > 0 { entries.removeFirst(drop) }
    }

    /// The first entry whose newest message is at or after `cutoff` (times only grow along the entries).
    private func firstKeptIndex(cutoff: Int64) -> Int? {
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].newest < cutoff { lo = mid + 1 } else { hi = mid }
        }
        return lo < entries.count ? lo : nil
    }
}

extension MessageAges {
    /// The oldest offset moved up to `offset` (whole segments went), where the stream is at `byte`: entries
    /// below it go, and the first one kept starts there.
    public mutating func rebase(at offset: Int64, byte: Int64) {
        forget(below: offset)
        guard var first = entries.first, first.offset <= offset else { return }
        first.offset = offset
        first.byte = byte
        entries[0] = first
    }
}
