import Foundation
import DNPipesCore

/// One partition of a pipe's topic as this mount streams it, shared by every open handle of the pipe.
///
/// The stream keeps a window of recent messages (at most `windowBytes` plus one fetch). Readers inside the
/// window read from memory; a reader at its front waits for the consumer; a reader behind it asks for a
/// rewind, and the stream refetches from there. So memory does not grow with the number of readers or how far
/// behind one is, and the mount keeps one consumer connection however many readers there are.
// @unchecked Sendable: every var is guarded by `lock`.
final class PartitionStream: @unchecked Sendable {
    let partition: Int32
    private var windowBytes: Int
    /// Wakes the consumer thread (a rewind asked for, room made in a full window).
    private let wakeConsumer: @Sendable () -> Void

    let lock = NSLock()
    private var offsets: [Int64] = []
    /// Where each message's bytes are: a range of one of `chunks`, the buffers the consumer filled (one per
    /// consumed batch, so a message costs no allocation of its own, and a read is served from a chunk without
    /// copying it).
    private var locations: [(chunk: Int, range: Range<Int>)] = []
    private var chunks: [[UInt8]] = []
    /// Chunks below this index hold no message of the window any more and have been let go.
    private var releasedChunks = 0
    /// Running byte totals: `totals[i]` counts the payloads of every message up to and including `i` (from
    /// `totalsBase`, what the dropped messages before index 0 added up to), so eviction finds its cut points by
    /// binary search instead of walking thousands of messages on every read, and the window's size is the
    /// difference of two totals.
    private var totals: [Int] = []
    private var totalsBase = 0
    private var head = 0
    /// The window holds every message in `[windowStart, position)`.
    private var windowStart: Int64 = 0
    /// The offset the consumer delivers next.
    var position: Int64 = 0
    /// Readers below this offset continue from it: one past the last reset marker seen or written.
    var resetFloor: Int64 = 0
    var lowWatermark: Int64 = 0
    private var highWatermark: Int64 = 0
    /// Set once the stream's first fetch has answered (with records or at the end of the partition): before
    /// that, the end of the partition is not known.
    private var caughtUp = false
    private var paused = false
    private var rewindTo: Int64?
    /// A rewind the consumer has taken but not yet made: until it is, the window's position is not where
    /// the stream is going.
    private var rewindPending = false
    private var caughtUpCallbacks: [@Sendable () -> Void] = []
    /// Where the stream starts: one past the partition's last reset when the first reader opened the pipe.
    private(set) var streamStart: Int64 = 0
    /// Byte positions of what the stream has delivered since the reset floor (see `StreamIndex`): a pipe's
    /// size on this mount is what it has streamed. Nil until the stream starts (the floor is not known).
    var index: StreamIndex?
    /// When delivered messages were pushed (their brokers' timestamps) and how long they are kept (see
    /// PartitionStream+Retention.swift).
    var ages = MessageAges()
    /// The newest message's time: its timestamp from the brokers, or when this mount's push was acknowledged.
    private var lastPush: timespec?
    /// Whether delivered messages are kept for readers. A stream started to answer a stat, before any reader
    /// opened the pipe, only counts them: it holds no window, so listing many pipes costs no memory per pipe
    /// beyond their indexes. A reader that comes later rewinds to where it starts.
    private var retaining = true
    /// While this mount writes the pipe (`writers` above zero), a counting stream fetches only while a stat
    /// waits for its count: at the end of the partition, or at its next delivery, it holds (the consumer
    /// lets go of the partition, and takes it again at `position` when a stat, a reader or the last writer's
    /// close wants more), so that a mount writing a pipe nobody reads here does not fetch every message back
    /// as it writes. Without writers it fetches on, as every stream does, and so sees other hosts' pushes.
    private var holding = false
    /// The pipe's open writers on this mount (its own lock box, never held while calling out).
    private let writers: LockedValue<Int>
    /// A stat waits for the stream to reach the partition's end (the next end-of-partition event).
    private var countingToEnd = false
    private var countedCallbacks: [@Sendable () -> Void] = []

    init(partition: Int32, windowBytes: Int, writers: LockedValue<Int> = LockedValue(0), wakeConsumer: @escaping @Sendable () -> Void) {
        self.writers = writers
        self.partition = partition
        self.windowBytes = windowBytes
        self.wakeConsumer = wakeConsumer
    }

    /// Readers have come (see `retaining`).
    /// A stream that was only counting holds none of what it delivered: it goes back to its floor for them.
    func retainForReaders() {
        lock.lock()
        let wasCounting = !retaining
        retaining = true
        let wasHolding = holding
        holding = false
        countingToEnd = false
        let counted = countedCallbacks
        countedCallbacks = []
        let rewind = wasCounting && index != nil && windowStart > resetFloor
        if rewind && (rewindTo ?? Int64.max) > resetFloor { rewindTo = resetFloor }
        lock.unlock()
        if rewind || wasHolding { wakeConsumer() }
        counted.forEach { $0() }
    }

    /// A stat wants everything pushed so far counted, on every host: a counting stream that holds (or is
    /// on its way to) fetches up to the end of the partition, then calls `then`. A stream that fetches
    /// on anyway calls `then` at once.
    func countToEnd(then: @escaping @Sendable () -> Void) {
        lock.lock()
        guard !retaining, holding || countingToEnd || isWritten else { lock.unlock(); return then() }
        countedCallbacks.append(then)
        countingToEnd = true
        let resume = holding
        holding = false
        lock.unlock()
        if resume { wakeConsumer() }
    }

    /// The stream only counts what it delivers until `retainForReaders`.
    func countOnly() {
        lock.lock()
        retaining = false
        lock.unlock()
    }

    /// The pipe's budget is shared by its partitions.
    func setWindowBytes(_ bytes: Int) {
        lock.lock()
        windowBytes = bytes
        lock.unlock()
    }

    /// The stream begins at `floor` (or later, after a reset made here meanwhile).
    func start(at floor: Int64) {
        lock.lock()
        let at = max(floor, resetFloor)
        streamStart = at
        windowStart = at
        position = at
        resetFloor = at
        index = StreamIndex(origin: at)
        lock.unlock()
    }

    func streamExtent() -> StreamExtent? {
        lock.lock(); defer { lock.unlock() }
        return index?.extent(lastPush: lastPush)
    }

    func streamAnchor(atOrBefore byte: Int64) -> StreamAnchor? {
        lock.lock(); defer { lock.unlock() }
        return index?.anchor(atOrBefore: byte)
    }

    var isCaughtUp: Bool {
        lock.lock(); defer { lock.unlock() }
        return caughtUp
    }

    func bounds() -> (oldest: Int64, end: Int64) {
        lock.lock(); defer { lock.unlock() }
        let end = max(highWatermark, position)
        return (min(max(resetFloor, lowWatermark, firstKept()), end), end)
    }

    /// Messages from `offset` on, about `maxBytes` but at least one, or nil when there are none yet (a reader
    /// behind the window has asked for a rewind meanwhile).
    func fetch(from offset: Int64, maxBytes: Int) -> MessageBatch? {
        lock.lock()
        defer { lock.unlock() }
        if !caughtUp { return nil }
        let x = max(offset, resetFloor, lowWatermark, firstKept())
        if x >= position {
            // At the front: room for more? Drop what this reader has passed, keeping some history for
            // readers just behind it.
            if paused { evict(below: x, keepBytes: windowBytes / 4) }
            return nil
        }
        if x < windowStart {
            if rewindTo == nil || rewindTo! > x {
                rewindTo = x
                wakeConsumer()
            }
            return nil
        }
        // Inside the window: binary search for the first message at or after x.
        var lo = head, hi = offsets.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if offsets[mid] < x { lo = mid + 1 } else { hi = mid }
        }
        // Up to maxBytes, from one chunk: the batch shares that chunk's buffer.
        let chunk = locations[lo].chunk
        var total = 0
        var i = lo
        while i < offsets.count && locations[i].chunk == chunk && (i == lo || total < maxBytes) {
            total += locations[i].range.count + 1
            i += 1
        }
        let batch = MessageBatch(offsets: Array(offsets[lo..<i]),
                                 block: MessageBlock(bytes: chunks[chunk], ranges: locations[lo..<i].map(\.range)))
        if paused {
            // The stream waits for room: make it as soon as a reader has passed enough, so that the next fetch
            // overlaps with reading the rest of the window instead of starting when it is all read.
            evict(below: offsets[i - 1], keepBytes: windowBytes / 4)
        }
        return batch
    }

    /// Whether the stream has delivered everything below `offset` (or cannot go on until a reader makes room).
    func hasReached(_ offset: Int64) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return (position >= offset && rewindTo == nil && !rewindPending) || paused
    }

    /// Raises the known end (a high watermark from the cluster).
    func raiseEnd(to offset: Int64) {
        lock.lock()
        highWatermark = max(highWatermark, offset)
        lock.unlock()
    }

    // MARK: Fed by the consumer thread

    /// A batch of consumed records: their offsets, their payloads in one block, and which of them are reset
    /// markers. Returns whether anything changed, whether the window is over its budget (the consumer then
    /// stops serving the partition's queue until a reader makes room), and whether the stream holds (only
    /// counting a pipe written here, see `holding`: the consumer then lets go of the partition until
    /// `takeRequests` says resume).
    func deliver(offsets delivered: [Int64], block: MessageBlock, markers: Set<Int>,
                 newestTimestamp: Int64 = -1, timestamps: [Int64] = []) -> (changed: Bool, full: Bool, hold: Bool) {
        lock.lock()
        defer { lock.unlock() }
        var changed = false
        let chunk = chunks.count
        var used = false
        for (i, offset) in delivered.enumerated() where offset >= position {
            position = offset + 1
            if markers.contains(i) {
                applyMarker(at: offset)
            } else if offset >= resetFloor {
                let range = block.ranges[i]
                noteAge(offset: offset, timestamp: i < timestamps.count ? timestamps[i] : newestTimestamp)
                index?.note(offset: offset, length: range.count)
                offsets.append(offset)
                locations.append((chunk, range))
                totals.append((totals.last ?? totalsBase) + range.count)
                used = true
            }
            changed = true
        }
        if used { chunks.append(block.bytes) }
        if !retaining { evict(below: position, keepBytes: 0) }
        index?.pass(to: position)
        if newestTimestamp >= 0 {
            let t = timespec(tv_sec: Int(newestTimestamp / 1000), tv_nsec: Int(newestTimestamp % 1000) * 1_000_000)
            if lastPush.map({ ($0.tv_sec, $0.tv_nsec) < (t.tv_sec, t.tv_nsec) }) ?? true { lastPush = t }
        }
        highWatermark = max(highWatermark, position)
        // A counting stream of a pipe written here that no stat waits for holds at once.
        if !retaining && caughtUp && !countingToEnd && isWritten { holding = true }
        let full = windowSize > windowBytes
        if full { paused = true }
        return (changed, full, holding)
    }

    /// The first fetch brought records and the partition's watermarks (from the fetch response): readers
    /// can start, and the end of the partition is known. Returns whether this was the first news.
    func learnedEnd(high: Int64, low: Int64) -> Bool {
        lock.lock()
        highWatermark = max(highWatermark, high)
        return markCaughtUp(low: low)
    }

    /// The consumer reached the end of the partition. Returns whether this was the first news, and whether
    /// the stream, only counting, holds now (the consumer then lets go of the partition).
    func reachedEnd(at offset: Int64, low: Int64) -> (first: Bool, hold: Bool) {
        lock.lock()
        highWatermark = max(highWatermark, offset)
        // Everything below the end has been delivered (offsets without a message are control records).
        if offset > position && rewindTo == nil { position = offset }
        index?.pass(to: position)
        var counted: [@Sendable () -> Void] = []
        if !retaining && rewindTo == nil && !rewindPending {
            holding = isWritten
            countingToEnd = false
            counted = countedCallbacks
            countedCallbacks = []
        }
        let hold = holding
        let first = markCaughtUp(low: low)
        counted.forEach { $0() }
        return (first, hold)
    }

    /// Called with the lock held; releases it.
    private func markCaughtUp(low: Int64) -> Bool {
        lowWatermark = max(lowWatermark, low)
        let first = !caughtUp
        caughtUp = true
        let callbacks = caughtUpCallbacks
        caughtUpCallbacks = []
        lock.unlock()
        callbacks.forEach { $0() }
        return first
    }

    /// Calls `callback` once the stream has reached the end of the partition once (at once if it has), or
    /// is closed. Holds no thread meanwhile.
    func whenCaughtUp(_ callback: @escaping @Sendable () -> Void) {
        lock.lock()
        if caughtUp { lock.unlock(); return callback() }
        caughtUpCallbacks.append(callback)
        lock.unlock()
    }

    /// Our own producer's acknowledgement: the end moves at once, before the consumer fetches the message.
    func acknowledged(offset: Int64) {
        lock.lock()
        lastPush = StreamExtent.now()
        lock.unlock()
        raiseEnd(to: offset + 1)
    }

    func noteMarker(at offset: Int64) {
        lock.lock()
        applyMarker(at: offset)
        highWatermark = max(highWatermark, offset + 1)
        lock.unlock()
    }

    /// Called with the lock held.
    private func applyMarker(at offset: Int64) {
        guard offset + 1 > resetFloor else { return }
        resetFloor = offset + 1
        ages.restart(at: resetFloor)
        if index != nil {
            index?.restart(at: resetFloor)
            lastPush = StreamExtent.now()
        }
        evict(below: resetFloor, keepBytes: 0)
    }

    private func totalBefore(_ i: Int) -> Int { i == 0 ? totalsBase : totals[i - 1] }

    /// The payload bytes the window holds. Called with the lock held.
    private var windowSize: Int { totalBefore(offsets.count) - totalBefore(head) }

    /// Drops messages below `limit`, except the newest `keepBytes` of them. Called with the lock held.
    private func evict(below limit: Int64, keepBytes: Int) {
        // end: the first message at or after `limit`.
        var lo = head, hi = offsets.count
        while lo < hi { let mid = (lo + hi) / 2; if offsets[mid] < limit { lo = mid + 1 } else { hi = mid } }
        let end = lo
        // cut: the first message of the newest run below `end` that fits in `keepBytes`.
        let endTotal = totalBefore(end)
        lo = head; hi = end
        while lo < hi { let mid = (lo + hi) / 2; if endTotal - totalBefore(mid) > keepBytes { lo = mid + 1 } else { hi = mid } }
        let cut = keepBytes == 0 ? end : lo
        guard cut > head else { return }
        head = cut
        // Let go of chunks no message of the window is in any more.
        let firstKept = head < offsets.count ? locations[head].chunk : chunks.count
        while releasedChunks < firstKept { chunks[releasedChunks] = []; releasedChunks += 1 }
        windowStart = head < offsets.count ? offsets[head] : position
        if head > 4096 && head * 2 > offsets.count {
            totalsBase = totals[head - 1]
            offsets.removeFirst(head)
            locations.removeFirst(head)
            totals.removeFirst(head)
            head = 0
            // Renumber the chunks from the first one still in use.
            chunks.removeFirst(firstKept)
            releasedChunks = 0
            for i in locations.indices { locations[i].chunk -= firstKept }
        }
        if paused && windowSize <= windowBytes / 2 {
            paused = false
            wakeConsumer()
        }
    }

    /// Whether this mount has a writer of the pipe open. Called with the lock held.
    private var isWritten: Bool { writers.withLock { $0 } > 0 }

    /// The pipe's last writer here closed: a holding stream fetches on (and so counts other hosts' pushes).
    func writersGone() {
        lock.lock()
        let resume = holding && !isWritten
        if resume { holding = false }
        lock.unlock()
        if resume { wakeConsumer() }
    }

    /// Where the consumer fetches next when it takes a held partition again.
    var nextOffset: Int64 {
        lock.lock(); defer { lock.unlock() }
        return position
    }

    /// The consumer asks what to do for this partition before its next poll.
    func takeRequests() -> (rewind: Int64?, resume: Bool) {
        lock.lock(); defer { lock.unlock() }
        let r = rewindTo
        rewindTo = nil
        if r != nil { rewindPending = true }
        return (r, !paused && !holding)
    }

    /// The consumer has moved the partition's fetch position to `offset`: the window starts anew there.
    func rewound(to offset: Int64) {
        lock.lock()
        rewindPending = false
        dropWindow()
        windowStart = offset
        position = offset
        paused = false
        lock.unlock()
    }

    /// The pipe was deleted: let go of the window and of anyone waiting.
    func close() {
        lock.lock()
        dropWindow()
        let callbacks = caughtUpCallbacks + countedCallbacks
        caughtUpCallbacks = []
        countedCallbacks = []
        lock.unlock()
        callbacks.forEach { $0() }
    }

    /// Called with the lock held.
    private func dropWindow() {
        offsets = []; locations = []; chunks = []; releasedChunks = 0; totals = []; totalsBase = 0; head = 0
    }
}
