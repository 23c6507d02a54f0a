import Dispatch
import Foundation
import Logging

/// How groups behave; the mount's options set it.
public struct GroupSettings: Sendable {
    /// A message given out this many times without being done goes to the dead-letter pipe instead.
    public var maxDeliveries: Int
    /// The dead-letter pipe of PIPE is PIPE followed by this.
    public var deadLetterSuffix: String
    /// A member (another host's daemon) that wrote nothing to a journal for this long while it held messages
    /// is taken for lost, and what it held is given to others.
    public var memberTimeout: Double
    /// Whether other members may be alive when this one starts: true where hosts share the store (Kafka).
    /// The embedded store has one daemon at a time, so whatever earlier members held is free at once.
    public var othersMayBeAlive: Bool
    /// How many messages a member claims ahead per open handle, so that its readers do not each wait for a
    /// claim to go round the journal.
    public var claimAheadPerReader: Int

    public init(maxDeliveries: Int = 5, deadLetterSuffix: String = ".dead", memberTimeout: Double = 10,
                othersMayBeAlive: Bool = false, claimAheadPerReader: Int = 8) {
        self.maxDeliveries = maxDeliveries
        self.deadLetterSuffix = deadLetterSuffix
        self.memberTimeout = memberTimeout
        self.othersMayBeAlive = othersMayBeAlive
        self.claimAheadPerReader = claimAheadPerReader
    }
}

/// What a reader of a group gets.
public enum GroupGrant: Sendable {
    /// One message and its offset in the pipe.
    case message(offset: Int64, bytes: [UInt8])
    /// None now, and the reader does not wait.
    case wouldBlock
    /// The pipe was deleted (or the group forgotten).
    case removed
}

/// This process's part in one consumer group reading one pipe: it claims messages through the group's journal
/// (see `GroupRecord` and `GroupLedger`), hands them to its local readers one at a time, and records which
/// are done or given back.
///
/// All state lives on one serial queue: requests from readers, entries read from the journal, and arrivals in
/// the pipe are all handled there in turn, and nothing there waits on the network or another request (the
/// disk only for bounded work: a fetch's pread, and the first open of the dead-letter pipe). Readers are
/// answered from that queue by the callbacks they gave, which must not wait either.
// @unchecked Sendable: every mutable field is touched only on `queue`.
public final class GroupMember: @unchecked Sendable {
    public let group: PipeName
    public let pipeName: PipeName
    public let memberID: String
    private let store: PipeStore
    private let pipe: PipeLog
    private let journal: PipeLog
    private let writer: PipeWriter
    private let settings: GroupSettings
    private let logger: Logger
    private let queue: DispatchQueue

    private var ledger = GroupLedger()
    private var journalNext: Int64 = 0
    /// Whether the journal was read up to its end as it was at start: before that, claims would be made on a
    /// state that is not the group's.
    private var ready = false
    private var readyTarget: Int64?
    private var whenReady: [() -> Void] = []
    /// Offsets this member won and has not handed out yet, ascending.
    private var pool: [Int64] = []
    /// Messages of the pool fetched along with an earlier one: a fetch reads a block of the pipe (64 KiB on
    /// the embedded store), so fetching each message alone would read each block once per message.
    private var bodies: [Int64: [UInt8]] = [:]
    /// Offsets handed to local readers and not done or given back yet.
    private var handed: Set<Int64> = []
    private struct Waiter { let id: UInt64; let deliver: @Sendable (GroupGrant) -> Bool }
    private var waiters: [Waiter] = []
    /// This member's claims on their way round the journal, oldest first (one writer keeps them in order), and
    /// the offsets they ask for: the next claim asks for others, so two can be under way at once.
    private var pendingClaims: [[Int64]] = []
    private var claimed: Set<Int64> = []
    /// Messages claimed ahead per reader: doubled each time readers waited for a claim to come back (the
    /// journal's round trip is long on Kafka), back to the setting once the readers are gone.
    private var claimAhead: Int
    private var starved = false
    private var outgoing: [GroupRecord] = []
    private var flushScheduled = false
    private var lastSeen: [String: DispatchTime] = [:]
    private var expiring: Set<String> = []
    private var readers = 0
    private var idleRelease: DispatchWorkItem?
    private var timer: DispatchSourceTimer?
    private var removed = false
    private var observerTokens: (pipe: Int, journal: Int) = (0, 0)
    /// Whether a reader may find something now, for poll (read from any thread).
    private let availableNow = LockedValue(false)
    private let availability = Observers()

    init(group: PipeName, pipe: PipeLog, journal: PipeLog, store: PipeStore, memberID: String,
         settings: GroupSettings, logger: Logger) throws {
        self.group = group
        self.pipeName = pipe.name
        self.pipe = pipe
        self.journal = journal
        self.store = store
        self.memberID = memberID
        self.settings = settings
        self.logger = logger
        writer = try journal.makeWriter()
        queue = DispatchQueue(label: "dnpipes.group.\(group).\(pipe.name)")
        claimAhead = settings.claimAheadPerReader
    }

    /// Starts reading the journal; readers are served once it was read up to its end.
    func start() {
        let pipeToken = pipe.addObserver { [weak self] in
            guard let self else { return }
            self.queue.async { self.serve() }
        }
        let journalToken = journal.addObserver { [weak self] in
            guard let self else { return }
            self.queue.async { self.readJournal() }
        }
        queue.async { self.observerTokens = (pipeToken, journalToken) }
        pipe.synchronize {}
        journal.synchronize { [self] in
            queue.async { [self] in
                readyTarget = journal.bounds().end
                // Entries that arrived meanwhile were read already (the journal's observer reads them as they
                // come): reading them again would apply each claim twice and count its delivery twice.
                journalNext = max(journalNext, journal.bounds().oldest)
                readJournal()
            }
        }
        let timer = DispatchSource.makeTimerSource(queue: queue)
        let period = max(settings.memberTimeout / 3, 0.1)
        timer.schedule(deadline: .now() + period, repeating: period)
        timer.setEventHandler { [weak self] in self?.tick() }
        timer.resume()
        self.timer = timer
    }

    /// Stops (the group was forgotten, the pipe deleted, or the mount stops); readers waiting get `.removed`.
    /// With `wait`, returns once the last entries are durable (for shutdown, never on a FUSE thread).
    func stop(wait: Bool = false) {
        defer {
            if wait {
                queue.sync {}
                let durable = DispatchSemaphore(value: 0)
                writer.flush { _ in durable.signal() }
                durable.wait()
            }
        }
        queue.async { [self] in
            guard timer != nil else { return }
            timer?.cancel()
            timer = nil
            pipe.removeObserver(observerTokens.pipe)
            journal.removeObserver(observerTokens.journal)
            giveBackPool()
            flush()
            removed = true
            failWaiters()
        }
    }

    // MARK: Readers

    /// A reader opened a handle.
    public func readerOpened() {
        queue.async { [self] in
            readers += 1
            idleRelease?.cancel()
            idleRelease = nil
        }
    }

    /// A reader closed its handle. Once no reader is left for a moment, what was claimed ahead goes back.
    public func readerClosed() {
        queue.async { [self] in
            readers -= 1
            guard readers == 0 else { return }
            let item = DispatchWorkItem { [weak self] in
                guard let self, self.readers == 0 else { return }
                self.giveBackPool()
                self.flush()
            }
            idleRelease = item
            queue.asyncAfter(deadline: .now() + 1, execute: item)
        }
    }

    /// Asks for one message: `deliver` is called once, from the member's queue, with a message, with
    /// `.wouldBlock` (only when `nonBlocking`), or with `.removed`. It returns false when the reader no longer
    /// wants it (interrupted meanwhile); the message then goes to the next reader.
    public func take(waiter id: UInt64, nonBlocking: Bool, deliver: @escaping @Sendable (GroupGrant) -> Bool) {
        queue.async { [self] in
            if removed { _ = deliver(.removed); return }
            waiters.append(Waiter(id: id, deliver: deliver))
            serve()
            if nonBlocking, let index = waiters.firstIndex(where: { $0.id == id }) {
                waiters.remove(at: index)
                _ = deliver(.wouldBlock)
            }
        }
    }

    /// The reader waiting as `id` was interrupted.
    public func cancel(waiter id: UInt64) {
        queue.async { [self] in waiters.removeAll { $0.id == id } }
    }

    /// The reader finished the message: nobody gets it again.
    public func done(_ offset: Int64) {
        queue.async { [self] in
            guard handed.remove(offset) != nil else { return }
            append(.done(member: memberID, offsets: [offset]))
        }
    }

    /// The reader gave the message back unfinished (its handle was closed): another reader gets it. What
    /// this member claimed ahead goes back too, so that the next claim takes the oldest free message first,
    /// and the given-back one again only through the journal, where its deliveries are counted.
    public func giveBack(_ offset: Int64) {
        queue.async { [self] in
            guard handed.remove(offset) != nil else { return }
            append(.release(member: memberID, offsets: [offset]))
            giveBackPool()
        }
    }

    /// Whether a read could be answered now (for poll; may be a moment out of date).
    public var mayHaveMessage: Bool { availableNow.withLock { $0 } }
    /// Registers a callback for when `mayHaveMessage` may have become true.
    public func addAvailabilityObserver(_ callback: @escaping @Sendable () -> Void) -> Int { availability.add(callback) }
    public func removeAvailabilityObserver(_ token: Int) { availability.remove(token) }

    /// Messages of the pipe not done by the group: free ones and ones some member holds; answered once the
    /// journal was read up to its end.
    public func backlog(completion: @escaping @Sendable (_ free: Int, _ out: Int) -> Void) {
        queue.async { [self] in
            let answer = { [self] in
                let bounds = pipe.bounds()
                let counts = ledger.backlog(from: bounds.oldest, below: bounds.end)
                completion(counts.free, counts.out)
            }
            if ready { answer() } else { whenReady.append(answer) }
        }
    }

    // MARK: The journal

    private func readJournal() {
        guard !removed else { return }
        while true {
            let fetched: Fetched
            do { fetched = try journal.fetch(from: journalNext, maxBytes: 1 << 20) } catch {
                logger.error("reading a group's journal failed", metadata: ["group": "\(group)", "pipe": "\(pipeName)", "error": "\(error)"])
                return
            }
            guard case .messages(let batch) = fetched else {
                if case .removed = fetched { removed = true; failWaiters() }
                break
            }
            for i in 0..<batch.count {
                journalNext = batch.offsets[i] + 1
                guard let record = GroupRecord(line: batch.block[i]) else { continue }
                apply(record)
            }
        }
        if !ready, let target = readyTarget, journalNext >= target {
            ready = true
            defer {
                let waiting = whenReady
                whenReady = []
                waiting.forEach { $0() }
            }
            if !settings.othersMayBeAlive {
                // No one else serves this store: whatever earlier members held is free now.
                for member in ledger.holdings.keys where member != memberID {
                    append(.expire(by: memberID, member: member))
                }
            }
        }
        serve()
    }

    private func apply(_ record: GroupRecord) {
        lastSeen[record.author] = .now()
        let change = ledger.apply(record)
        switch record {
        case .claim(let member, let offsets) where member == memberID:
            if !pendingClaims.isEmpty { pendingClaims.removeFirst() }
            claimed.subtract(offsets)
            pool = (pool + change.won).sorted()
            if starved { claimAhead = min(claimAhead * 2, GroupMember.maxClaimAhead) }
            starved = false
        case .expire(_, let member):
            expiring.remove(member)
            if member == memberID && !(change.expiredOffsets.isEmpty && pool.isEmpty) {
                logger.warning("this host was taken for lost by the group; what it held goes to other readers",
                               metadata: ["group": "\(group)", "pipe": "\(pipeName)", "by": "\(record.author)"])
                pool = []
                bodies = [:]
            }
        default:
            break
        }
    }

    private func append(_ record: GroupRecord) {
        outgoing.append(record)
        guard !flushScheduled else { return }
        flushScheduled = true
        queue.async { [self] in flush() }
    }

    /// Pushes the entries gathered meanwhile as one batch.
    private func flush() {
        flushScheduled = false
        guard !outgoing.isEmpty else { return }
        let records = outgoing
        outgoing = []
        do {
            try writer.push(MessageBlock(records.map { Array($0.line.utf8) }), accepted: {})
            writer.flush { [self] error in
                if let error { journalFailed(records, error) }
            }
        } catch PipeError.full {
            outgoing = records + outgoing
            writer.whenRoom { [weak self] in
                guard let self else { return }
                self.queue.async { self.flush() }
            }
        } catch {
            journalFailed(records, error)
        }
    }

    private func journalFailed(_ records: [GroupRecord], _ error: Error) {
        logger.error("writing a group's journal failed", metadata: ["group": "\(group)", "pipe": "\(pipeName)", "error": "\(error)"])
        queue.asyncAfter(deadline: .now() + 1) { [self] in
            // A claim that never reached the journal won nothing: claim again.
            for record in records {
                if case .claim(_, let offsets) = record {
                    pendingClaims.removeAll { $0 == offsets }
                    claimed.subtract(offsets)
                    continue
                }
                append(record)
            }
            serve()
        }
    }

    // MARK: Serving readers

    private func serve() {
        guard ready, !removed else { return }
        let bounds = pipe.bounds()
        while !waiters.isEmpty, let offset = pool.first {
            if offset < bounds.oldest {
                // Reset away: not a message any more.
                pool.removeFirst()
                bodies[offset] = nil
                append(.done(member: memberID, offsets: [offset]))
                continue
            }
            if let bytes = bodies.removeValue(forKey: offset) {
                pool.removeFirst()
                handOut(offset, bytes)
                continue
            }
            let fetched: Fetched
            do { fetched = try pipe.fetch(from: offset, maxBytes: 64 << 10) } catch {
                logger.error("reading a pipe for its group failed", metadata: ["group": "\(group)", "pipe": "\(pipeName)", "error": "\(error)"])
                break
            }
            switch fetched {
            case .nothing:
                // Not fetched yet (Kafka): the pipe's observer calls again.
                updateAvailability()
                return
            case .removed:
                removed = true
                failWaiters()
                return
            case .messages(let batch):
                pool.removeFirst()
                guard batch.offsets[0] == offset else {
                    // A gap (a reset marker, a control record): nothing to hand out.
                    append(.done(member: memberID, offsets: [offset]))
                    continue
                }
                if batch.count > 1 {
                    let wanted = Set(pool.prefix(1024))
                    for i in 1..<batch.count where wanted.contains(batch.offsets[i]) { bodies[batch.offsets[i]] = Array(batch.block[i]) }
                }
                handOut(offset, Array(batch.block[0]))
            }
        }
        claimIfWanted(bounds)
        updateAvailability()
    }

    /// Gives a message of the pool (taken off it) to the first reader still waiting, or back to the pool.
    private func handOut(_ offset: Int64, _ bytes: [UInt8]) {
        if ledger.deliveries(of: offset) > settings.maxDeliveries {
            moveToDeadLetter(offset, bytes)
            return
        }
        handed.insert(offset)
        var delivered = false
        while !delivered && !waiters.isEmpty {
            delivered = waiters.removeFirst().deliver(.message(offset: offset, bytes: bytes))
        }
        if !delivered {
            handed.remove(offset)
            pool.insert(offset, at: 0)
            bodies[offset] = bytes
        }
    }

    static let maxClaimAhead = 256

    private func claimIfWanted(_ bounds: (oldest: Int64, end: Int64)) {
        if !pendingClaims.isEmpty && pool.isEmpty && !waiters.isEmpty { starved = true }
        guard pendingClaims.count < 2, readers > 0 || !waiters.isEmpty else { return }
        let target = max(waiters.count, readers * claimAhead)
        let have = pool.count + claimed.count
        guard have < max(1, target / 2) || pool.count < waiters.count else { return }
        let offsets = Array(ledger.free(from: bounds.oldest, below: bounds.end, limit: target - pool.count + claimed.count)
            .filter { !claimed.contains($0) }.prefix(max(1, target - have)))
        guard !offsets.isEmpty else { return }
        pendingClaims.append(offsets)
        claimed.formUnion(offsets)
        append(.claim(member: memberID, offsets: offsets))
    }

    /// The backlog now, nil until the journal was read. Waits for the member's queue (for a metrics scrape;
    /// never call it on a FUSE thread, nor on that queue).
    public func currentBacklog() -> (free: Int, out: Int)? {
        queue.sync {
            guard ready else { return nil }
            let bounds = pipe.bounds()
            return ledger.backlog(from: bounds.oldest, below: bounds.end)
        }
    }

    private func updateAvailability() {
        let bounds = pipe.bounds()
        let now = !pool.isEmpty || !ledger.free(from: bounds.oldest, below: bounds.end, limit: 1).isEmpty || removed
        let was = availableNow.withLock { value -> Bool in
            let was = value
            value = now
            return was
        }
        if now && !was { availability.notify() }
    }

    private func failWaiters() {
        let all = waiters
        waiters = []
        for waiter in all { _ = waiter.deliver(.removed) }
        availableNow.withLock { $0 = true }
        availability.notify()
    }

    private func giveBackPool() {
        if readers == 0 { claimAhead = settings.claimAheadPerReader }
        guard !pool.isEmpty else { return }
        append(.unclaim(member: memberID, offsets: pool))
        pool = []
        bodies = [:]
    }

    /// Pushes a message given out too often to the dead-letter pipe, then marks it done (so a crash between
    /// the two gives it to the dead-letter pipe twice rather than not at all).
    private func moveToDeadLetter(_ offset: Int64, _ bytes: [UInt8]) {
        let tries = ledger.deliveries(of: offset) - 1
        do {
            let deadName = try PipeName(validating: pipeName.value + settings.deadLetterSuffix)
            try store.create(deadName)
            guard let dead = try store.open(deadName) else { throw PipeError.noSuchPipe(deadName) }
            let deadWriter = try dead.makeWriter()
            try deadWriter.push(MessageBlock([bytes]), accepted: {})
            // The completion keeps the writer until its message is delivered.
            deadWriter.flush { [self, deadWriter] error in
                withExtendedLifetime(deadWriter) {}
                queue.async { [self] in
                    if let error {
                        logger.error("moving a message to the dead-letter pipe failed; it stays in the group",
                                     metadata: ["group": "\(group)", "pipe": "\(pipeName)", "offset": "\(offset)", "error": "\(error)"])
                        append(.release(member: memberID, offsets: [offset]))
                    } else {
                        logger.notice("message given out \(tries) times without being done moved to the dead-letter pipe",
                                      metadata: ["group": "\(group)", "pipe": "\(pipeName)", "offset": "\(offset)", "to": "\(deadName)"])
                        append(.dead(member: memberID, offsets: [offset]))
                    }
                    serve()
                }
            }
        } catch {
            logger.error("no dead-letter pipe for a message given out too often; it stays in the group",
                         metadata: ["group": "\(group)", "pipe": "\(pipeName)", "offset": "\(offset)", "error": "\(error)"])
            append(.release(member: memberID, offsets: [offset]))
        }
    }

    // MARK: Liveness

    private func tick() {
        guard ready, !removed else { return }
        if !pool.isEmpty || !handed.isEmpty { append(.alive(member: memberID)) }
        guard settings.othersMayBeAlive else { return }
        let limit = DispatchTime.now().uptimeNanoseconds &- UInt64(settings.memberTimeout * 1e9)
        for member in ledger.holdings.keys where member != memberID && !expiring.contains(member) {
            let seen = lastSeen[member]?.uptimeNanoseconds ?? 0
            if seen < limit {
                logger.warning("a group member wrote nothing for \(settings.memberTimeout) s; what it held goes to other readers",
                               metadata: ["group": "\(group)", "pipe": "\(pipeName)", "member": "\(member)"])
                expiring.insert(member)
                append(.expire(by: memberID, member: member))
            }
        }
    }
}
