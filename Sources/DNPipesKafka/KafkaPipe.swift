import Foundation
import DNPipesCore

/// One pipe on Kafka: its topic, read through one stream per partition that every open handle of the mount
/// shares (see `PartitionStream`).
///
/// Topics dnpipes makes have one partition. A topic made elsewhere may have several: each is streamed, and
/// readers take from all of them (see `ReadCursor`). Pushes from dnpipes go to partition 0, so what one
/// writer pushes stays in order.
// @unchecked Sendable: every var is guarded by `lock`; the streams guard their own state.
final class KafkaPipe: PipeLog, @unchecked Sendable {
    let name: PipeName
    let topic: String
    /// Held strongly: the store lets go of its pipes at shutdown, and a pipe a handle still holds then finds
    /// the store stopped (its clients gone), never freed.
    private let store: KafkaStore
    private let observers = Observers()
    private let windowBytes: Int

    private let lock = NSLock()
    /// Partition 0 from the start (writers acknowledge into it); the others once the stream starts.
    private var streams: [PartitionStream] = []
    private var removed = false
    /// Whether the stream was asked to start (by the first reader, or a stat that counts it).
    private var streamRequested = false
    /// Whether a reader asked: until then a stream started for a stat only counts (see `PartitionStream`).
    private var readerCame = false
    /// How many of `streams` have started.
    private var startedCount = 0

    init(name: PipeName, topic: String, store: KafkaStore, windowBytes: Int) {
        self.name = name
        self.topic = topic
        self.store = store
        self.windowBytes = windowBytes
        streams = [makeStream(0)]
    }

    private func makeStream(_ partition: Int) -> PartitionStream {
        PartitionStream(partition: Int32(partition), windowBytes: windowBytes, writers: writers,
                        wakeConsumer: { [weak store] in store?.wakeConsumer() })
    }

    /// Open writers of the pipe on this mount (see `PartitionStream.writers`).
    private let writers = LockedValue(0)

    func writerOpened() { writers.withLock { $0 += 1 } }

    func writerClosed() {
        guard writers.withLock({ $0 -= 1; return $0 == 0 }) else { return }
        partitionStreams.forEach { $0.writersGone() }
    }

    /// The streams, in partition order.
    var partitionStreams: [PartitionStream] {
        lock.lock(); defer { lock.unlock() }
        return streams
    }

    func stream(_ partition: Int) -> PartitionStream? {
        lock.lock(); defer { lock.unlock() }
        return partition < streams.count ? streams[partition] : nil
    }

    /// Starts the streams of partitions not streamed yet, each at the cluster's record of that partition's last
    /// reset (`floors` has one per partition, for all of them). Returns the streams that are new, for the
    /// consumer to assign. The window's budget is shared by the partitions, so the memory a pipe holds does
    /// not grow with them.
    func start(floors: [Int64]) -> [PartitionStream] {
        lock.lock()
        let budget = max(windowBytes / max(1, floors.count), 1 << 20)
        while streams.count < floors.count { streams.append(makeStream(streams.count)) }
        let fresh = Array(streams[startedCount..<max(startedCount, floors.count)])
        startedCount = max(startedCount, floors.count)
        let all = streams
        // Under the pipe's lock, as `synchronize` marks readers: a reader that comes now is seen here, or
        // finds the streams counting and turns them back.
        if !readerCame { fresh.forEach { $0.countOnly() } }
        lock.unlock()
        all.forEach { $0.setWindowBytes(budget) }
        for stream in fresh { stream.start(at: floors[Int(stream.partition)]) }
        return fresh
    }

    // MARK: PipeLog

    var partitionCount: Int {
        lock.lock(); defer { lock.unlock() }
        return streams.count
    }

    func bounds(partition: Int) -> (oldest: Int64, end: Int64) {
        stream(partition)?.bounds() ?? (0, 0)
    }

    /// Whether the streams have started (a reader opened the pipe on this mount).
    var isStreaming: Bool {
        lock.lock(); defer { lock.unlock() }
        return startedCount > 0
    }

    var isRemoved: Bool {
        lock.lock(); defer { lock.unlock() }
        return removed
    }

    /// Positions count what this mount has streamed of partition 0; a pipe of several partitions has no
    /// positions (readers interleave partitions each their own way), only a size, the sum of what is streamed.
    func streamExtent() -> StreamExtent? {
        let all = partitionStreams
        guard var extent = all.first?.streamExtent() else { return nil }
        for stream in all.dropFirst() {
            guard let e = stream.streamExtent() else { continue }
            extent.size += e.size
            if let t = e.lastPush, extent.lastPush.map({ ($0.tv_sec, $0.tv_nsec) < (t.tv_sec, t.tv_nsec) }) ?? true {
                extent.lastPush = t
            }
        }
        return extent
    }

    func streamAnchor(atOrBefore byte: Int64) -> StreamAnchor? {
        let all = partitionStreams
        guard all.count == 1 else { return nil }
        return all[0].streamAnchor(atOrBefore: byte)
    }

    func fetch(partition: Int, from offset: Int64, maxBytes: Int) throws -> Fetched {
        if isRemoved { return .removed }
        guard let stream = stream(partition) else { return .nothing }
        return stream.fetch(from: offset, maxBytes: maxBytes).map { .messages($0) } ?? .nothing
    }

    /// The consumer's cached high watermarks are refreshed by every fetch response (at least every
    /// fetch.wait.max.ms while a partition is idle): take ones newer than this call, then complete once the
    /// streams have delivered up to them, so that what another host pushed or reset before the open is seen.
    /// Nothing blocks a thread meanwhile: a timer, then the streams' own notifications.
    func synchronize(completion: @escaping @Sendable () -> Void) {
        let once = Once(completion)
        lock.lock()
        let startStream = !streamRequested
        streamRequested = true
        readerCame = true
        streams.forEach { $0.retainForReaders() }
        lock.unlock()
        started(startStream) { [self] in
            // Until each stream's first fetch answers, the end of the pipe is unknown.
            whenCaughtUp(timeout: store.configuration.connectTimeout) { [self] caughtUp in
                if !caughtUp {
                    store.logger.warning("pipe \(name): no answer from the Kafka brokers \(store.configuration.brokers) yet; its reader waits")
                    return once.run()
                }
                // A stream that starts now starts from the cluster's own record of the last reset, and its first
                // fetch brought the end: nothing more to wait for. A running one may lag by one fetch.
                if startStream { once.run() } else { synchronizeWithCluster(once) }
            }
        }
    }

    /// Starts the streams if `start` (on the store's queue for that), then runs `then`.
    private func started(_ start: Bool, then: @escaping @Sendable () -> Void) {
        if start { store.startStream(self, then: then) } else { then() }
    }

    /// Calls `completion(true)` once every stream has reached the end of its partition once, or
    /// `completion(false)` after `timeout` seconds; holds no thread meanwhile.
    func whenCaughtUp(timeout: Double, completion: @escaping @Sendable (Bool) -> Void) {
        let all = partitionStreams
        let answered = LockedValue(false)
        let finish: @Sendable (Bool) -> Void = { caughtUp in
            if answered.withLock({ was in defer { was = true }; return !was }) { completion(caughtUp) }
        }
        let left = LockedValue(all.count)
        for stream in all {
            stream.whenCaughtUp { if left.withLock({ $0 -= 1; return $0 == 0 }) { finish(true) } }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [weak self] in finish(self?.isRemoved ?? true) }
    }

    private func synchronizeWithCluster(_ once: Once) {
        DispatchQueue.global().asyncAfter(deadline: .now() + store.freshFetchInterval) { [self] in
            // Up to the cluster's end, and to this mount's own acknowledged pushes, which may be newer.
            let targets: [(PartitionStream, Int64)] = partitionStreams.map { stream in
                let high = store.cachedHighWatermark(of: topic, partition: stream.partition) ?? 0
                stream.raiseEnd(to: high)
                return (stream, max(high, stream.bounds().end))
            }
            whenStreamed(to: targets, timeout: 5, once)
        }
    }

    /// Runs `once` when every stream has delivered up to its target (or cannot go on until a reader makes
    /// room), the pipe is deleted, or `timeout` seconds have passed. Waits on the streams' notifications.
    private func whenStreamed(to targets: [(PartitionStream, Int64)], timeout: Double, _ once: Once) {
        let reached: @Sendable () -> Bool = { [weak self] in
            guard let self else { return true }
            return self.isRemoved || targets.allSatisfy { $0.0.hasReached($0.1) }
        }
        let token = LockedValue(0)
        let observer = addObserver { [weak self] in
            if reached() { once.run(); self?.removeObserver(token.withLock { $0 }) }
        }
        token.withLock { $0 = observer }
        if reached() { once.run(); removeObserver(observer); return }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [weak self] in
            once.run(); self?.removeObserver(observer)
        }
    }

    /// Whether a stat must wait: for the pipe's stream to start (a stat counts a pipe no reader opened
    /// here), or for it to deliver what is known to be pushed (this mount's own pushes are acknowledged
    /// before the consumer fetches them).
    var isSettling: Bool {
        !isStreaming || partitionStreams.contains { !$0.hasReached($0.bounds().end) }
    }

    /// Completes once the streams have delivered everything known to be pushed now, so that a size counts
    /// it, or after a few seconds at most. A pipe not streamed yet is streamed from here on, counting only.
    func settle(completion: @escaping @Sendable () -> Void) {
        let once = Once(completion)
        lock.lock()
        let startStream = !streamRequested
        streamRequested = true
        lock.unlock()
        // However the brokers fare, a stat is answered within 0.8 s, with what is known by then (a
        // healthy broker starts a stream and answers its first fetch in a fraction of that).
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.8) { once.run() }
        guard startStream || !isStreaming else { return whenCounted(timeout: 1, once) }
        started(startStream) { [self] in
            whenCaughtUp(timeout: 2) { [self] _ in whenCounted(timeout: 1, once) }
        }
    }

    /// Runs `once` when every stream has counted what is pushed now, on any host (a counting stream fetches
    /// again up to the partition's end), or after `timeout` seconds.
    private func whenCounted(timeout: Double, _ once: Once) {
        let all = partitionStreams
        let left = LockedValue(all.count)
        let counted: @Sendable () -> Void = { [weak self] in
            guard let self else { return once.run() }
            whenStreamed(to: partitionStreams.map { ($0, $0.bounds().end) }, timeout: timeout, once)
        }
        if all.isEmpty { return counted() }
        for stream in all {
            stream.countToEnd { if left.withLock({ $0 -= 1; return $0 == 0 }) { counted() } }
        }
    }

    func makeWriter() throws -> PipeWriter {
        if isRemoved { throw PipeError.removed(name) }
        return KafkaWriter(pipe: self, producer: store.producer, configuration: store.configuration, logger: store.logger)
    }

    /// Writes a reset marker (an empty message with the `dnpipes-reset` header) to every partition and, once
    /// the broker has them all, moves each partition's oldest offset past its marker and records those offsets
    /// in the reset group. Every dnpipes reader on every host skips what lies before a marker as soon as its
    /// stream reaches it, a mount that opens the pipe later starts past them, and DeleteRecords, where the
    /// broker has it, frees the storage.
    func reset(completion: @escaping @Sendable (Error?) -> Void) {
        let count = max(partitionCount, store.knownPartitionCount(of: topic))
        let markers = ResetMarkers(count: count)
        for partition in 0..<count {
            store.produceMarker(for: self, partition: Int32(partition)) { [self] result in
                switch result {
                case .failure(let error):
                    if markers.fail() { completion(error) }
                case .success(let markerOffset):
                    stream(partition)?.noteMarker(at: markerOffset)
                    observers.notify()
                    guard let floors = markers.add(partition: partition, offset: markerOffset + 1) else { return }
                    // Not on the producer's thread, which delivers the reports: the commit waits on the network.
                    store.adminQueue.async { [self] in
                        guard store.isRunning else {
                            return completion(PipeError.unavailable("the mount is stopping; the reset was written but not recorded"))
                        }
                        do {
                            try store.commitResetFloors(floors, of: topic)
                        } catch {
                            store.logger.error("pipe \(name): reset written but not recorded for readers that open it later: \(error)")
                            return completion(error)
                        }
                        store.deleteRecords(of: self, below: floors)
                        completion(nil)
                    }
                }
            }
        }
    }

    func addObserver(_ callback: @escaping @Sendable () -> Void) -> Int { observers.add(callback) }
    func removeObserver(_ token: Int) { observers.remove(token) }

    /// Readers look again (messages arrived, a stream caught up, a rewind started over).
    func notifyReaders() { observers.notify() }

    /// Our own producer's acknowledgement (pushes go to partition 0).
    func acknowledged(offset: Int64) { stream(0)?.acknowledged(offset: offset) }

    func markRemoved() {
        lock.lock()
        removed = true
        let all = streams
        lock.unlock()
        all.forEach { $0.close() }
        observers.notify()
    }
}

/// Runs a completion at most once, whichever path gets there first.
final class Once: Sendable {
    private let action: LockedValue<(@Sendable () -> Void)?>
    init(_ action: @escaping @Sendable () -> Void) { self.action = LockedValue(action) }
    func run() {
        let a = action.withLock { a in defer { a = nil }; return a }
        a?()
    }
}
