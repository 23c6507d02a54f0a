#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation
import DNPipesCore

/// One pipe of the embedded store: a directory of segment files plus a `start` file that records the oldest
/// readable offset. Reset writes a new start offset and starts a new segment, then unlinks the old segments:
/// its cost does not depend on how many messages the pipe held.
// @unchecked Sendable: every var is read and written under `lock`, except the turn counters, which are under
// `turn`; segments are read with pread outside it, below a size taken under it (see `Segment`).
final class EmbeddedLog: PipeLog, @unchecked Sendable {
    let name: PipeName
    let directory: String
    /// The pipe's directory, held open: work finished outside the lock (a reset's last steps) goes to this
    /// directory even if the pipe was deleted meanwhile and its name reused.
    private let config: EmbeddedStore.Configuration
    let syncQueue: DispatchQueue
    private let observers = Observers()
    /// Observers are told here, in order, never from within a push, a reset or a delete: a writer may hold
    /// its own lock around a push, and an observer may take that lock.
    private let notifyQueue: DispatchQueue

    let lock = NSLock()
    var segments: [Segment]
    var start: Int64
    var end: Int64
    var removed = false
    /// Byte positions of the framed stream from `start` on.
    var index: StreamIndex
    /// When the newest message was written (the pipe's mtime); a reset counts as a change too.
    private var lastPush: timespec
    /// Whether observers have a notification on its way that has not started yet (pushes in a burst share it).
    private var notifyPending = false
    /// Appends' turns (see `append`): the next ticket to give, and the ticket whose append writes now, both
    /// guarded by `turn`, which waiters for a turn wait on.
    private let turn = NSCondition()
    private var nextTicket: UInt64 = 0
    private var servingTicket: UInt64 = 0
    /// Segments written since their last fdatasync (the active one included when dirty).
    var unsynced: [ObjectIdentifier: Segment] = [:]
    var directoryUnsynced = false
    private var waitingForSync: [@Sendable (Error?) -> Void] = []
    /// The appends (by turn) that the waiting syncs cover.
    private var syncUpTo: UInt64 = 0
    private var syncScheduled = false
    /// Where recent fetches ended: offset -> (segment base, first offset and position of the batch holding
    /// it), so a sequential reader continues without consulting the sparse index.
    var positionHints: [Int64: (segment: Int64, batch: (offset: Int64, position: Int64))] = [:]
    /// When messages were pushed and how long they are kept (see EmbeddedLog+Retention.swift).
    var ages: MessageAges
    /// When expiry last wrote the start file (uptime nanoseconds; see EmbeddedLog+Retention.swift).
    var expiryWroteStart: UInt64 = 0

    private init(name: PipeName, directory: String, config: EmbeddedStore.Configuration, syncQueue: DispatchQueue,
                 segments: [Segment], start: Int64, index: StreamIndex, lastPush: timespec, ages: MessageAges) {
        self.name = name
        self.directory = directory
        self.config = config
        self.syncQueue = syncQueue
        self.notifyQueue = DispatchQueue(label: "dnpipes.embedded.observers", target: .global())
        self.segments = segments
        let last = segments.last!
        self.end = last.base + last.count
        self.start = min(start, end)
        self.index = index
        self.lastPush = lastPush
        self.ages = ages
    }

    /// Runs `body` with the pipe's directory open: it is opened for each use (resets, retention), so that an
    /// idle pipe holds no descriptor.
    func withDirectory<T>(_ body: (Int32) throws -> T) throws -> T {
        let fd = try systemCall("open \(directory)") { Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        return try body(fd)
    }

    static let startFile = "start"

    /// Creates the directory of a new, empty pipe.
    static func create(name: PipeName, directory: String) throws {
        try systemCall("mkdir \(directory)") { mkdir(directory, 0o755) }
        _ = try Segment.create(directory: directory, base: 0)
        try fsyncDirectory(directory)
    }

    /// Opens a pipe's directory and recovers it: every segment is checked and a torn tail of the newest one is
    /// cut off; segments wholly below the start offset (left by a reset cut short by a crash) are deleted.
    static func open(name: PipeName, directory: String, config: EmbeddedStore.Configuration,
                     syncQueue: DispatchQueue, log: (String) -> Void) throws -> EmbeddedLog {
        let start = readStart(directory)
        let names = try directoryEntries(directory)
        for leftover in names where leftover.hasSuffix(".log" + LegacySegment.temporarySuffix) {
            unlink(directory + "/" + leftover)
        }
        let bases = names.compactMap(Segment.base(ofFileName:)).sorted()
        var rewritten = false
        var segments: [Segment] = []
        var index = StreamIndex(origin: start)
        var ages = MessageAges(retention: readRetention(directory))
        for (i, base) in bases.enumerated() {
            let path = directory + "/" + Segment.fileName(base: base)
            let isLast = i == bases.count - 1
            if !isLast && bases[i + 1] <= start {
                unlink(path)
                continue
            }
            if try LegacySegment.needsRewrite(path: path) {
                let (records, dropped) = try LegacySegment.rewrite(path: path, base: base, maxPayload: config.maxMessageBytes)
                rewritten = true
                log("pipe \(name): rewrote \(path) (\(records) records) in the batch format")
                if dropped > 0 {
                    log(isLast ? "pipe \(name): dropped a torn tail of \(dropped) bytes from \(path) (never acknowledged)"
                               : "pipe \(name): dropped \(dropped) unreadable bytes after the last valid record of \(path)")
                }
            }
            let byteBefore = index.size
            let (segment, cut) = try Segment.open(path: path, base: base, maxPayload: config.maxMessageBytes,
                                                  cutTornTail: isLast) { offset, length in
                if offset >= start { index.note(offset: offset, length: length) }
            }
            ages.noteSegment(segment, from: start, byte: byteBefore)
            if cut > 0 {
                log(isLast ? "pipe \(name): dropped a torn tail of \(cut) bytes from \(path) (never acknowledged)"
                           : "pipe \(name): \(path) has \(cut) unreadable bytes after its last valid batch")
            }
            segments.append(segment)
        }
        if segments.isEmpty {
            segments.append(try Segment.create(directory: directory, base: start))
            rewritten = true
        }
        if rewritten { try fsyncDirectory(directory) }
        // The newest segment was written last: its mtime is the last push (or the reset that started it).
        let lastPush = (try? segments.last!.status().st_mtim) ?? StreamExtent.now()
        return EmbeddedLog(name: name, directory: directory, config: config, syncQueue: syncQueue,
                           segments: segments, start: start, index: index, lastPush: lastPush, ages: ages)
    }

    private static func readStart(_ directory: String) -> Int64 {
        guard let text = try? String(contentsOfFile: directory + "/" + startFile, encoding: .utf8) else { return 0 }
        return Int64(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    // MARK: PipeLog

    /// One partition: any other is empty.
    func bounds(partition: Int) -> (oldest: Int64, end: Int64) {
        guard partition == 0 else { return (0, 0) }
        lock.lock(); defer { lock.unlock() }
        return (oldestKept(), end)
    }

    var isRemoved: Bool {
        lock.lock(); defer { lock.unlock() }
        return removed
    }

    /// Every offset from the start to the end holds a message: no need to read one to know.
    func readiness(partition: Int, from offset: Int64) -> Readiness {
        guard partition == 0 else { return .nothing }
        lock.lock(); defer { lock.unlock() }
        if removed { return .removed }
        let from = max(offset, oldestKept())
        return from < end ? .message(at: from) : .nothing
    }

    func streamExtent() -> StreamExtent? {
        lock.lock(); defer { lock.unlock() }
        return index.extent(lastPush: lastPush)
    }

    func streamAnchor(atOrBefore byte: Int64) -> StreamAnchor? {
        lock.lock(); defer { lock.unlock() }
        return index.anchor(atOrBefore: byte)
    }

    func fetch(partition: Int, from offset: Int64, maxBytes: Int) throws -> Fetched {
        guard partition == 0 else { return .nothing }
        var from = offset
        while true {
            lock.lock()
            if removed { lock.unlock(); return .removed }
            from = max(from, oldestKept())
            if from >= end { lock.unlock(); return .nothing }
            // The last segment whose base is at or below `from`.
            var lo = 0, hi = segments.count - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if segments[mid].base <= from { lo = mid } else { hi = mid - 1 }
            }
            let segment = segments[lo]
            let following = lo + 1 < segments.count ? segments[lo + 1].base : nil
            let limit = segment.size
            var scanStart = segment.indexed(atOrBefore: from)
            if let hint = positionHints[from], hint.segment == segment.base { scanStart = hint.batch }
            let whole = segment.wholeBatches(from: from, maxBytes: max(1, maxBytes))
            lock.unlock()

            let result: Segment.Read
            do {
                if let whole, let read = try segment.read(whole) {
                    result = read
                } else {
                    result = try segment.read(from: from, scanFrom: scanStart, limit: limit, maxBytes: max(1, maxBytes))
                }
            } catch let gone as SegmentGone {
                // Its file was closed by the descriptor cache and unlinked since by a reset or retention: look
                // again from the oldest message kept now. A segment still in the log must not be missing.
                lock.lock()
                let stillThere = segments.contains { $0 === segment }
                lock.unlock()
                if stillThere { throw PipeError.io("\(gone), yet the pipe still holds it") }
                continue
            }
            if !result.messages.isEmpty {
                lock.lock()
                if positionHints.count > 4096 { positionHints.removeAll(keepingCapacity: true) }
                positionHints[result.next] = (segment.base, result.resume)
                lock.unlock()
                return .messages(MessageBatch(first: from, block: result.messages))
            }
            // The offset lies past this segment's batches (a segment cut short by damage): go on with the
            // next segment, or report nothing if this is the newest.
            guard let next = following, next > from else { return .nothing }
            from = next
        }
    }

    func makeWriter() throws -> PipeWriter {
        if isRemoved { throw PipeError.removed(name) }
        return EmbeddedWriter(log: self)
    }

    func reset(completion: @escaping @Sendable (Error?) -> Void) {
        // Writes already answered when the reset comes are before it, also those still being written.
        let upTo = ticketsIssued()
        syncQueue.async { [self] in
            waitForAppends(upTo: upTo)
            do {
                lock.lock()
                if removed { lock.unlock(); throw PipeError.removed(name) }
                let newStart = end
                var old: [Segment] = []
                if let active = segments.last, active.count > 0 || active.base != newStart {
                    do {
                        let fresh = try Segment.create(directory: directory, base: newStart)
                        old = segments
                        segments = [fresh]
                        for s in old { unsynced[ObjectIdentifier(s)] = nil }
                    } catch {
                        lock.unlock()
                        throw error
                    }
                } else {
                    old = Array(segments.dropLast())
                    segments = [segments.last!]
                }
                start = newStart
                index.restart(at: newStart)
                ages.restart(at: newStart)
                lastPush = StreamExtent.now()
                positionHints.removeAll()
                lock.unlock()
                // Durable order: the new start offset (and the new segment's directory entry) first, then the
                // old files go. A crash in between leaves files that the next open deletes.
                try writeStartFile(newStart)
                try? withDirectory { dir in for s in old { unlinkat(dir, Segment.fileName(base: s.base), 0) } }
                notifyObservers()
                completion(nil)
            } catch {
                completion(error)
            }
        }
    }

    func addObserver(_ callback: @escaping @Sendable () -> Void) -> Int { observers.add(callback) }
    func removeObserver(_ token: Int) { observers.remove(token) }

    // MARK: Writing

    /// Appends messages: once it returns they are in the file (the page cache) and visible to readers.
    ///
    /// Appends to one pipe take a turn first (a ticket, in the order they come); `accepted` runs once the
    /// turn is taken, with no lock held, so the caller can answer its writer, whose next write then arrives
    /// while these records are encoded (outside any lock) and written in their turn. With a writer of large
    /// writes that keeps both cores busy. An error after `accepted` (the disk, a deletion) is thrown as
    /// usual; nothing of the append is stored then.
    ///
    /// `earlierFailure` is asked in the append's turn: a writer whose earlier append failed after it was
    /// accepted stores nothing more, so its messages never have a gap.
    func append(_ messages: MessageBlock, accepted: () -> Void = {}, failed: (Error) -> Void = { _ in },
                earlierFailure: () -> Error? = { nil }) throws {
        guard !messages.isEmpty else { return }
        let largest = messages.largest
        if largest > config.maxMessageBytes {
            throw PipeError.messageTooLarge(size: largest, limit: config.maxMessageBytes)
        }
        // A writer known to have failed is refused at once, before its write is answered.
        if let earlier = earlierFailure() { throw earlier }
        turn.lock()
        let ticket = nextTicket
        nextTicket += 1
        turn.unlock()
        accepted()
        var encoded = BatchFormat.encode(messages)
        // Wait for the appends that took their turn before this one (each writes at most one write's records).
        turn.lock()
        while servingTicket != ticket { turn.wait() }
        turn.unlock()
        defer {
            turn.lock()
            servingTicket += 1
            turn.broadcast()
            turn.unlock()
        }
        lock.lock()
        do {
            if removed { throw PipeError.removed(name) }
            if let earlier = earlierFailure() { throw earlier }
            var active = segments[segments.count - 1]
            if active.size >= config.segmentBytes {
                active = try Segment.create(directory: directory, base: end)
                segments.append(active)
                directoryUnsynced = true
            }
            encoded.place(at: end)
            try active.append(encoded)
            unsynced[ObjectIdentifier(active)] = active
            ages.note(offset: end, millis: currentMillis(), byte: index.size)
            for (i, range) in messages.ranges.enumerated() { index.note(offset: end + Int64(i), length: range.count) }
            end += Int64(messages.count)
            lastPush = StreamExtent.now()
        } catch {
            lock.unlock()
            // Before the turn passes: a sync waiting for this append then sees the failure.
            failed(error)
            throw error
        }
        lock.unlock()
        notifyObservers()
    }

    /// Waits (on the sync queue, never a FUSE thread) until every append that took its turn before `ticket`
    /// has written its records or failed.
    func waitForAppends(upTo ticket: UInt64) {
        turn.lock()
        while servingTicket < ticket { turn.wait() }
        turn.unlock()
    }

    /// How many appends have taken a turn so far.
    func ticketsIssued() -> UInt64 {
        turn.lock(); defer { turn.unlock() }
        return nextTicket
    }

    /// Tells observers on the log's own queue. A notification not yet started covers later changes too.
    func notifyObservers() {
        if observers.isEmpty { return }
        lock.lock()
        let schedule = !notifyPending
        notifyPending = true
        lock.unlock()
        guard schedule else { return }
        notifyQueue.async { [self] in
            lock.lock()
            notifyPending = false
            lock.unlock()
            observers.notify()
        }
    }

    /// Completes once everything appended before the call is on disk. Concurrent callers share one fdatasync
    /// (group commit), so many writers closing at once cost about one disk flush.
    ///
    /// "Appended before the call" includes appends already accepted and still being written (see `append`):
    /// the sync waits for their turn to end, on the sync queue.
    func sync(completion: @escaping @Sendable (Error?) -> Void) {
        let upTo = ticketsIssued()
        lock.lock()
        waitingForSync.append(completion)
        syncUpTo = max(syncUpTo, upTo)
        let schedule = !syncScheduled
        syncScheduled = true
        lock.unlock()
        if schedule { syncQueue.async { [self] in runSync() } }
    }

    private func runSync() {
        lock.lock()
        let target = syncUpTo
        lock.unlock()
        waitForAppends(upTo: target)
        lock.lock()
        let waiting = waitingForSync
        waitingForSync = []
        syncScheduled = false
        let dirty = Array(unsynced.values)
        unsynced.removeAll()
        let syncDirectory = directoryUnsynced
        directoryUnsynced = false
        lock.unlock()
        var failure: Error?
        for s in dirty.sorted(by: { $0.base < $1.base }) {
            do { try s.sync() } catch { failure = failure ?? error }
        }
        if syncDirectory {
            do { try EmbeddedLog.fsyncDirectory(directory) } catch { failure = failure ?? error }
        }
        for w in waiting { w(failure) }
    }

    /// Marks the pipe deleted: open readers reach end-of-file and writers fail.
    func markRemoved() {
        lock.lock()
        removed = true
        segments = [segments.last!]
        lock.unlock()
        notifyObservers()
    }

    func writeStartFile(_ value: Int64) throws {
        try withDirectory { directoryFD in try writeStartFile(value, in: directoryFD) }
    }

    private func writeStartFile(_ value: Int64, in directoryFD: Int32) throws {
        let tmp = EmbeddedLog.startFile + ".tmp"
        let fd = try systemCall("create \(directory)/\(tmp)") { openat(directoryFD, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        defer { close(fd) }
        let text = Array("\(value)\n".utf8)
        let written = try text.withUnsafeBytes { raw in try systemCall("write \(directory)/\(tmp)") { write(fd, raw.baseAddress, raw.count) } }
        if written != text.count { throw SystemError(what: "write \(directory)/\(tmp)", code: EIO) }
        try systemCall("fsync \(directory)/\(tmp)") { fsync(fd) }
        try systemCall("rename \(directory)/\(tmp)") { renameat(directoryFD, tmp, directoryFD, EmbeddedLog.startFile) }
        try systemCall("fsync \(directory)") { fsync(directoryFD) }
    }

    static func fsyncDirectory(_ path: String) throws {
        let fd = try systemCall("open \(path)") { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        try systemCall("fsync \(path)") { fsync(fd) }
    }
}

/// A writer of the embedded store: messages go to the file at once (the page cache), and flush waits for
/// the disk.
final class EmbeddedWriter: PipeWriter, Sendable {
    private let log: EmbeddedLog
    /// The first append of this writer that failed after it was accepted: every later flush reports it.
    private let failure = LockedValue<Error?>(nil)
    init(log: EmbeddedLog) { self.log = log }
    func push(_ messages: MessageBlock, accepted: () -> Void) throws {
        try log.append(messages, accepted: accepted, failed: { error in failure.withLock { $0 = $0 ?? error } },
                       earlierFailure: { failure.withLock { $0 } })
    }
    func flush(completion: @escaping @Sendable (Error?) -> Void) {
        log.sync { [failure] error in completion(error ?? failure.withLock { $0 }) }
    }
}
