import CRdKafka
import Foundation
import DNPipesCore

/// One pipe on Kafka: partition 0 of its topic, read through one stream that every open handle of the
/// mount shares.
///
/// The stream keeps a window of recent messages (at most `windowBytes` plus one fetch). Readers inside the
/// window read from memory; a reader at its front waits for the consumer; a reader behind it asks for a
/// rewind, and the stream refetches from there. So memory does not grow with the number of readers or how far
/// behind one is, and the mount keeps one consumer connection however many readers there are.
final class KafkaPipe: PipeLog, @unchecked Sendable {
    let name: PipeName
    let topic: String
    private unowned let store: KafkaStore
    private let observers = Observers()
    private let windowBytes: Int

    private let lock = NSLock()
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
    /// binary search instead of walking thousands of messages on every read.
    private var totals: [Int] = []
    private var totalsBase = 0
    private var head = 0
    private var bytes = 0
    /// The window holds every message in `[windowStart, position)`.
    private var windowStart: Int64 = 0
    /// The offset the consumer delivers next.
    private var position: Int64 = 0
    /// Readers below this offset continue from it: one past the last reset marker seen or written.
    private var resetFloor: Int64 = 0
    private var lowWatermark: Int64 = 0
    private var highWatermark: Int64 = 0
    /// Set once the stream's first fetch has answered (with records or at the end of the partition): before
    /// that, the end of the pipe is not known.
    private(set) var caughtUp = false
    private var removed = false
    private var paused = false
    private var rewindTo: Int64?
    private var caughtUpWaiters: [DispatchSemaphore] = []

    /// Whether the stream was asked to start (by the first reader).
    private var streamRequested = false
    /// Where the stream starts: one past the pipe's last reset when its first reader opened it here.
    private(set) var streamStart: Int64 = 0

    init(name: PipeName, topic: String, store: KafkaStore, windowBytes: Int) {
        self.name = name
        self.topic = topic
        self.store = store
        self.windowBytes = windowBytes
    }

    /// The stream begins at `floor` (or later, after a reset made here meanwhile).
    func start(at floor: Int64) {
        lock.lock()
        let at = max(floor, resetFloor)
        streamStart = at
        windowStart = at
        position = at
        resetFloor = at
        lock.unlock()
    }

    // MARK: PipeLog

    func bounds() -> (oldest: Int64, end: Int64) {
        lock.lock(); defer { lock.unlock() }
        let end = max(highWatermark, position)
        return (min(max(resetFloor, lowWatermark), end), end)
    }

    var isRemoved: Bool {
        lock.lock(); defer { lock.unlock() }
        return removed
    }

    func fetch(from offset: Int64, maxBytes: Int) throws -> Fetched {
        lock.lock()
        defer { lock.unlock() }
        if removed { return .removed }
        if !caughtUp { return .nothing }
        let x = max(offset, resetFloor, lowWatermark)
        if x >= position {
            // At the front: room for more? Drop what this reader has passed, keeping some history for
            // readers just behind it.
            if paused { evict(below: x, keepBytes: windowBytes / 4) }
            return .nothing
        }
        if x < windowStart {
            if rewindTo == nil || rewindTo! > x {
                rewindTo = x
                store.wakeConsumer()
            }
            return .nothing
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
        return .messages(batch)
    }

    /// The consumer's cached high watermark is refreshed by every fetch response (at least every
    /// fetch.wait.max.ms while the partition is idle): take one newer than this call, then complete once the
    /// stream has delivered up to it, so that what another host pushed or reset before the open is seen.
    /// Nothing blocks a thread meanwhile: a timer, then the stream's own notifications.
    func synchronize(completion: @escaping @Sendable () -> Void) {
        let once = Once(completion)
        lock.lock()
        let startStream = !streamRequested
        streamRequested = true
        lock.unlock()
        DispatchQueue.global().async { [self] in
            if startStream { store.startStream(self) }
            // Until the stream's first fetch answers, the end of the pipe is unknown.
            if !waitUntilCaughtUp(timeout: store.configuration.connectTimeout) {
                store.logger.warning("pipe \(name): no answer from the Kafka brokers \(store.configuration.brokers) yet; its reader waits")
                return once.run()
            }
            // A stream that starts now starts from the cluster's own record of the last reset, and its first
            // fetch brought the end: nothing more to wait for. A running one may lag by one fetch.
            if startStream { once.run() } else { synchronizeWithCluster(once) }
        }
    }

    private func synchronizeWithCluster(_ once: Once) {
        DispatchQueue.global().asyncAfter(deadline: .now() + store.freshFetchInterval) { [self] in
            guard let high = store.cachedHighWatermark(of: topic) else { return once.run() }
            lock.lock()
            if high > highWatermark { highWatermark = high }
            lock.unlock()
            let reached: @Sendable () -> Bool = { [weak self] in
                guard let self else { return true }
                self.lock.lock(); defer { self.lock.unlock() }
                return self.position >= high || self.removed || self.paused
            }
            let token = Box(0)
            token.value = addObserver { [weak self] in
                if reached() { once.run(); self?.removeObserver(token.value) }
            }
            if reached() { once.run(); removeObserver(token.value); return }
            DispatchQueue.global().asyncAfter(deadline: .now() + 5) { [weak self] in
                once.run(); self?.removeObserver(token.value)
            }
        }
    }

    func makeWriter() throws -> PipeWriter {
        if isRemoved { throw PipeError.removed(name) }
        return KafkaWriter(pipe: self, store: store)
    }

    /// Writes a reset marker (an empty message with the `dnpipes-reset` header) and, once the broker has it,
    /// moves the oldest offset past it and records that offset in the reset group. Every dnpipes reader on
    /// every host skips what lies before the marker as soon as its stream reaches the marker, a mount that
    /// opens the pipe later starts past it, and DeleteRecords, where the broker has it, frees the storage.
    func reset(completion: @escaping @Sendable (Error?) -> Void) {
        store.produceMarker(for: self) { [self] result in
            switch result {
            case .failure(let error):
                completion(error)
            case .success(let markerOffset):
                noteMarker(at: markerOffset)
                // Not on the producer's thread, which delivers the reports: the commit waits on the network.
                store.adminQueue.async { [self] in
                    do {
                        try store.commitResetFloor(markerOffset + 1, of: topic)
                    } catch {
                        store.logger.error("pipe \(name): reset written but not recorded for readers that open it later: \(error)")
                        return completion(error)
                    }
                    store.deleteRecords(of: self, below: markerOffset + 1)
                    completion(nil)
                }
            }
        }
    }

    func addObserver(_ callback: @escaping @Sendable () -> Void) -> Int { observers.add(callback) }
    func removeObserver(_ token: Int) { observers.remove(token) }

    // MARK: Fed by the consumer thread

    /// A batch of consumed records for this partition: their offsets, their payloads in one block, and which
    /// of them are reset markers. Returns whether the window is over its budget (the consumer then stops
    /// serving the partition's queue until a reader makes room).
    func deliver(offsets delivered: [Int64], block: MessageBlock, markers: Set<Int>) -> Bool {
        lock.lock()
        var changed = false
        let chunk = chunks.count
        var used = false
        for (i, offset) in delivered.enumerated() where offset >= position {
            position = offset + 1
            if markers.contains(i) {
                applyMarker(at: offset)
            } else if offset >= resetFloor {
                let range = block.ranges[i]
                offsets.append(offset)
                locations.append((chunk, range))
                totals.append((totals.last ?? totalsBase) + range.count)
                bytes += range.count
                used = true
            }
            changed = true
        }
        if used { chunks.append(block.bytes) }
        highWatermark = max(highWatermark, position)
        let full = bytes > windowBytes
        if full { paused = true }
        lock.unlock()
        if changed { observers.notify() }
        return full
    }

    /// The first fetch brought records and the partition's watermarks (from the fetch response): readers
    /// can start, and the end of the pipe is known.
    func learnedEnd(high: Int64, low: Int64) {
        lock.lock()
        highWatermark = max(highWatermark, high)
        markCaughtUp(low: low)
    }

    /// The consumer reached the end of the partition.
    func reachedEnd(at offset: Int64, low: Int64) {
        lock.lock()
        highWatermark = max(highWatermark, offset)
        // Everything below the end has been delivered (offsets without a message are control records).
        if offset > position && rewindTo == nil { position = offset }
        markCaughtUp(low: low)
    }

    /// Called with the lock held; releases it.
    private func markCaughtUp(low: Int64) {
        lowWatermark = max(lowWatermark, low)
        let first = !caughtUp
        caughtUp = true
        let waiters = caughtUpWaiters
        caughtUpWaiters = []
        lock.unlock()
        waiters.forEach { $0.signal() }
        if first { observers.notify() }
    }

    /// Our own producer's acknowledgement: the end moves at once, before the consumer fetches the message.
    func acknowledged(offset: Int64) {
        lock.lock()
        highWatermark = max(highWatermark, offset + 1)
        lock.unlock()
    }

    func noteMarker(at offset: Int64) {
        lock.lock()
        applyMarker(at: offset)
        highWatermark = max(highWatermark, offset + 1)
        lock.unlock()
        observers.notify()
    }

    /// Called with the lock held.
    private func applyMarker(at offset: Int64) {
        guard offset + 1 > resetFloor else { return }
        resetFloor = offset + 1
        evict(below: resetFloor, keepBytes: 0)
    }

    /// Drops messages below `limit`, except the newest `keepBytes` of them. Called with the lock held.
    private func evict(below limit: Int64, keepBytes: Int) {
        func totalBefore(_ i: Int) -> Int { i == 0 ? totalsBase : totals[i - 1] }
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
        bytes -= totalBefore(cut) - totalBefore(head)
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
        if paused && bytes <= windowBytes / 2 {
            paused = false
            store.wakeConsumer()
        }
    }

    /// The consumer asks what to do for this partition before its next poll.
    func takeRequests() -> (rewind: Int64?, resume: Bool) {
        lock.lock(); defer { lock.unlock() }
        let r = rewindTo
        rewindTo = nil
        return (r, !paused)
    }

    /// The consumer has moved the partition's fetch position to `offset`: the window starts anew there.
    func rewound(to offset: Int64) {
        lock.lock()
        offsets = []
        locations = []
        chunks = []
        releasedChunks = 0
        totals = []
        totalsBase = 0
        head = 0
        bytes = 0
        windowStart = offset
        position = offset
        paused = false
        lock.unlock()
        observers.notify()
    }

    func markRemoved() {
        lock.lock()
        removed = true
        offsets = []; locations = []; chunks = []; releasedChunks = 0; totals = []; totalsBase = 0; head = 0; bytes = 0
        let waiters = caughtUpWaiters
        caughtUpWaiters = []
        lock.unlock()
        waiters.forEach { $0.signal() }
        observers.notify()
    }

    /// Waits until the stream has reached the end of the partition once (not on a FUSE thread).
    func waitUntilCaughtUp(timeout: Double) -> Bool {
        lock.lock()
        if caughtUp || removed { lock.unlock(); return true }
        let s = DispatchSemaphore(value: 0)
        caughtUpWaiters.append(s)
        lock.unlock()
        return s.wait(timeout: .now() + timeout) == .success
    }
}

/// Runs a completion at most once, whichever path gets there first.
final class Once: @unchecked Sendable {
    private let lock = NSLock()
    private var action: (@Sendable () -> Void)?
    init(_ action: @escaping @Sendable () -> Void) { self.action = action }
    func run() {
        lock.lock()
        let a = action
        action = nil
        lock.unlock()
        a?()
    }
}

final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}
