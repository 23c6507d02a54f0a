#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import DNPipesCore

/// A `PipeStore` that keeps every pipe in memory, for tests of what is built on the protocol (the
/// filesystem's semantics, consumer groups) without a disk or a broker. It keeps the protocol's contract as
/// the real stores do: offsets only grow, a reset moves the oldest offset to the end, observers are told
/// asynchronously and in order (never from within a push, never with a lock held), and a flush completes
/// from elsewhere once what its writer pushed is stored.
///
/// Messages are stored when `push` returns, so a flush has nothing to wait for but its turn on the pipe's
/// queue; a pipe has one partition; the queue is unbounded, so pushes never throw `PipeError.full`.
public final class InMemoryStore: PipeStore, Sendable {
    public let maxMessageBytes: Int
    /// How long a log's `synchronize` takes to complete, as on a store that asks the network (Kafka), where
    /// observers may be told of pushes before it does.
    public let synchronizeDelay: Double
    private let logs = LockedValue<[PipeName: InMemoryLog]>([:])

    public init(maxMessageBytes: Int = 1 << 20, synchronizeDelay: Double = 0) {
        self.maxMessageBytes = maxMessageBytes
        self.synchronizeDelay = synchronizeDelay
    }

    public func list() throws -> [PipeName] { logs.withLock { Array($0.keys) }.sorted() }

    public func contains(_ name: PipeName) -> Bool { logs.withLock { $0[name] != nil } }

    @discardableResult
    public func create(_ name: PipeName) throws -> Bool {
        logs.withLock { logs in
            guard logs[name] == nil else { return false }
            logs[name] = InMemoryLog(name: name, maxMessageBytes: maxMessageBytes, synchronizeDelay: synchronizeDelay)
            return true
        }
    }

    public func remove(_ name: PipeName) throws {
        guard let log = logs.withLock({ $0.removeValue(forKey: name) }) else { throw PipeError.noSuchPipe(name) }
        log.markRemoved()
    }

    /// Every pipe's log is open from its creation on.
    public func open(_ name: PipeName) throws -> PipeLog? { openedLog(name) }

    public func openedLog(_ name: PipeName) -> PipeLog? { logs.withLock { $0[name] } }

    /// Nothing to make durable; waits for flushes and notifications already scheduled, so that none runs after.
    public func shutdown() {
        for log in logs.withLock({ Array($0.values) }) { log.drain() }
    }
}

/// One pipe of an `InMemoryStore`: its messages from the oldest kept offset to the end.
public final class InMemoryLog: PipeLog, Sendable {
    public let name: PipeName
    private let maxMessageBytes: Int
    private let synchronizeDelay: Double
    private struct State {
        var oldest: Int64 = 0
        /// The messages at `oldest ..< oldest + messages.count`.
        var messages: [[UInt8]] = []
        var index = StreamIndex(origin: 0)
        var lastPush: timespec?
        var removed = false
        var end: Int64 { oldest + Int64(messages.count) }
    }
    private let state = LockedValue(State())
    private let observers = Observers()
    /// Where observers are told and flushes and resets complete, one after another in the order they came.
    private let queue: DispatchQueue

    init(name: PipeName, maxMessageBytes: Int, synchronizeDelay: Double) {
        self.name = name
        self.maxMessageBytes = maxMessageBytes
        self.synchronizeDelay = synchronizeDelay
        queue = DispatchQueue(label: "dnpipes.in-memory.\(name)")
    }

    /// One partition: any other is empty.
    public func bounds(partition: Int) -> (oldest: Int64, end: Int64) {
        partition == 0 ? state.withLock { ($0.oldest, $0.end) } : (0, 0)
    }

    public var isRemoved: Bool { state.withLock { $0.removed } }

    /// Completes from the pipe's queue, after `synchronizeDelay`.
    public func synchronize(completion: @escaping @Sendable () -> Void) {
        queue.asyncAfter(deadline: .now() + synchronizeDelay, execute: completion)
    }

    public func fetch(partition: Int, from offset: Int64, maxBytes: Int) throws -> Fetched {
        guard partition == 0 else { return .nothing }
        return state.withLock { state in
            if state.removed { return .removed }
            let from = max(offset, state.oldest)
            guard from < state.end else { return .nothing }
            var block = MessageBlock()
            var bytes = 0
            var i = Int(from - state.oldest)
            while i < state.messages.count && (block.isEmpty || bytes + state.messages[i].count <= maxBytes) {
                block.append(state.messages[i])
                bytes += state.messages[i].count
                i += 1
            }
            return .messages(MessageBatch(first: from, block: block))
        }
    }

    public func readiness(partition: Int, from offset: Int64) -> Readiness {
        precondition(partition == 0, "pipe \(name) has one partition")
        return state.withLock { state in
            if state.removed { return .removed }
            let from = max(offset, state.oldest)
            return from < state.end ? .message(at: from) : .nothing
        }
    }

    public func makeWriter() throws -> PipeWriter {
        if isRemoved { throw PipeError.removed(name) }
        return InMemoryWriter(log: self)
    }

    public func reset(completion: @escaping @Sendable (Error?) -> Void) {
        queue.async { [self] in
            let removed = state.withLock { state -> Bool in
                guard !state.removed else { return true }
                state.oldest = state.end
                state.messages = []
                state.index.restart(at: state.oldest)
                state.lastPush = StreamExtent.now()
                return false
            }
            if removed { return completion(PipeError.removed(name)) }
            observers.notify()
            completion(nil)
        }
    }

    public func addObserver(_ callback: @escaping @Sendable () -> Void) -> Int { observers.add(callback) }
    public func removeObserver(_ token: Int) { observers.remove(token) }

    public func streamExtent() -> StreamExtent? { state.withLock { $0.index.extent(lastPush: $0.lastPush) } }

    public func streamAnchor(atOrBefore byte: Int64) -> StreamAnchor? { state.withLock { $0.index.anchor(atOrBefore: byte) } }

    /// Stores messages at the end, all or none.
    func append(_ messages: MessageBlock, accepted: () -> Void) throws {
        guard !messages.isEmpty else { return }
        if messages.largest > maxMessageBytes { throw PipeError.messageTooLarge(size: messages.largest, limit: maxMessageBytes) }
        try state.withLock { state in
            if state.removed { throw PipeError.removed(name) }
            for i in 0..<messages.count {
                state.index.note(offset: state.end, length: messages.ranges[i].count)
                state.messages.append(Array(messages[i]))
            }
            state.lastPush = StreamExtent.now()
        }
        accepted()
        notifyObservers()
    }

    /// Runs `body` on the pipe's queue, after everything scheduled before.
    func afterScheduled(_ body: @escaping @Sendable () -> Void) { queue.async(execute: body) }

    func markRemoved() {
        state.withLock { state in
            state.removed = true
            state.messages = []
        }
        notifyObservers()
    }

    func drain() { queue.sync {} }

    private func notifyObservers() {
        queue.async { [observers] in observers.notify() }
    }
}

/// A writer of an `InMemoryLog`: its messages are stored by the push, so a flush completes once the pipe's
/// queue reaches it (from elsewhere, as the real stores' flushes do).
final class InMemoryWriter: PipeWriter, Sendable {
    private let log: InMemoryLog

    init(log: InMemoryLog) { self.log = log }

    func push(_ messages: MessageBlock, accepted: () -> Void) throws { try log.append(messages, accepted: accepted) }

    func flush(completion: @escaping @Sendable (Error?) -> Void) { log.afterScheduled { completion(nil) } }
}
