import Dispatch

/// Where pipes live. Every backend (the embedded store, Kafka) implements this protocol, and the filesystem
/// and the command-line clients use nothing else, so both backends give the same semantics.
///
/// Offsets are per pipe, start at 0 and only grow: a reset moves the pipe's oldest offset up to its end rather
/// than starting again at 0 (as Kafka's DeleteRecords does), so a cursor from before a reset is never mistaken
/// for a position after it.
///
/// No method here waits on the network or the disk for long: anything that must wait (durability, a reset
/// reaching the broker) takes a completion handler, so a caller on a FUSE worker thread never stalls.
public protocol PipeStore: AnyObject, Sendable {
    /// The names of all pipes. Must answer from memory or a cache, fast enough for every `ls`.
    func list() throws -> [PipeName]
    /// Whether a pipe exists, answered from memory (every lookup asks).
    func contains(_ name: PipeName) -> Bool
    /// Whether a pipe exists, asking the backend when memory says no: a pipe just made on another host is
    /// found before the next periodic refresh. May wait on the network (never call it on a FUSE thread).
    func lookUp(_ name: PipeName) -> Bool
    /// Creates a pipe; returns false if it already existed.
    @discardableResult func create(_ name: PipeName) throws -> Bool
    /// Deletes a pipe and its messages. Open logs of it report `isRemoved` and readers reach end-of-file.
    func remove(_ name: PipeName) throws
    /// Opens a pipe's log, or returns nil if there is no such pipe.
    func open(_ name: PipeName) throws -> PipeLog?
    /// The pipe's log if it is open already: answered from memory, for a stat that must not wait.
    func openedLog(_ name: PipeName) -> PipeLog?
    /// The mount is stopping (a signal): new writes are refused, and every flush still waiting is answered
    /// within a bound, so that a close in progress does not hold the unmount. `shutdown` follows.
    func stopTakingWrites()
    /// Makes everything written durable and releases resources.
    func shutdown()
}

/// What a fetch found.
public enum Fetched: Sendable {
    /// Messages in order with their offsets (at or after the offset asked for). Offsets may have gaps:
    /// Kafka's control records and dnpipes's reset markers take offsets but are not messages.
    case messages(MessageBatch)
    /// Nothing at or after the offset yet; observers are told when that changes.
    case nothing
    /// The pipe was deleted.
    case removed
}

/// Messages and their offsets, in order. The messages share one buffer (a backend can hand out a part of
/// what it holds without copying it, and a reader copies each message once, into its read).
public struct MessageBatch: Sendable {
    public var offsets: [Int64]
    public var block: MessageBlock
    public init(offsets: [Int64], block: MessageBlock) {
        precondition(offsets.count == block.count)
        self.offsets = offsets
        self.block = block
    }
    public init(offsets: [Int64], messages: [[UInt8]]) {
        self.init(offsets: offsets, block: MessageBlock(messages))
    }
    /// A batch of consecutive offsets starting at `first`.
    public init(first: Int64, block: MessageBlock) {
        self.init(offsets: Array(first..<(first + Int64(block.count))), block: block)
    }
    public init(first: Int64, messages: [[UInt8]]) {
        self.init(first: first, block: MessageBlock(messages))
    }
    public var count: Int { offsets.count }
    public var isEmpty: Bool { offsets.isEmpty }
    /// Each message as an array of its own (for tests).
    public var messages: [[UInt8]] { block.messages }
    /// Keeps only messages below `limit`.
    public mutating func truncate(below limit: Int64) {
        let keep = offsets.firstIndex(where: { $0 >= limit }) ?? offsets.count
        offsets.removeLast(offsets.count - keep)
        block.keepFirst(keep)
    }
}

/// What a read from an offset would find now.
public enum Readiness: Equatable, Sendable {
    case message(at: Int64)
    case nothing
    case removed
}

/// One pipe as seen by its open handles.
public protocol PipeLog: AnyObject, Sendable {
    var name: PipeName { get }
    var isRemoved: Bool { get }

    /// How many partitions (separately ordered parts) the pipe has: 1 for the embedded store and for topics
    /// dnpipes makes; a Kafka topic made elsewhere may have more, and may gain more. Offsets, bounds and
    /// fetches are per partition; a partition at or past the count is empty.
    var partitionCount: Int { get }
    /// The partition's oldest offset still readable and the offset the next push to it will get.
    func bounds(partition: Int) -> (oldest: Int64, end: Int64)
    /// Returns the partition's messages from `offset` on, about `maxBytes` in total but at least one if any
    /// is there. Never blocks: with nothing there it returns `.nothing` (a backend that must fetch remotely
    /// starts fetching and tells observers when data arrives).
    func fetch(partition: Int, from offset: Int64, maxBytes: Int) throws -> Fetched

    /// Brings `bounds()` up to date with pushes and resets made elsewhere (other hosts) before a reader
    /// starts, then calls `completion` (on any thread; it may take a moment on the network).
    func synchronize(completion: @escaping @Sendable () -> Void)

    /// A producer for one writer (one open file handle): its flush covers exactly its own messages.
    func makeWriter() throws -> PipeWriter

    /// Removes every message. Completes once no reader anywhere can get a message pushed before the call.
    func reset(completion: @escaping @Sendable (Error?) -> Void)

    /// Registers a callback run (on any thread, without locks held) when messages arrive, the pipe is reset, or
    /// it is removed. Returns a token for `removeObserver`.
    func addObserver(_ callback: @escaping @Sendable () -> Void) -> Int
    func removeObserver(_ token: Int)

    /// The offset of the first message at or after `offset` that a fetch would return now, without fetching
    /// it (poll asks this for every poller at every push, and must move no data), or what stands instead.
    func readiness(partition: Int, from offset: Int64) -> Readiness

    /// Partition 0's framed stream in bytes (see `StreamIndex`): a pipe's size and mtime, and where byte
    /// positions start. Nil when the backend does not know them (yet).
    func streamExtent() -> StreamExtent?
    /// The last anchor at or before `byte` of the stream since the current origin, or nil when positions are
    /// not known. Readers that seek use it to find where a position lies.
    func streamAnchor(atOrBefore byte: Int64) -> StreamAnchor?
    /// Whether `streamExtent()` lags what is known to be pushed (a backend that counts what it fetches,
    /// after its own pushes were acknowledged); `settle` then completes once it does not, briefly bounded.
    var isSettling: Bool { get }
    func settle(completion: @escaping @Sendable () -> Void)
}

extension PipeStore {
    /// A store whose flushes end on their own (the disk's) has nothing to stop before `shutdown`.
    public func stopTakingWrites() {}

    /// A store that is the only maker of its pipes knows them all.
    public func lookUp(_ name: PipeName) -> Bool { contains(name) }
}

extension PipeWriter {
    /// Pushes messages given one array each.
    public func push(_ messages: [[UInt8]]) throws { try push(MessageBlock(messages), accepted: {}) }
    public func push(_ messages: MessageBlock) throws { try push(messages, accepted: {}) }

    /// A store whose pushes never refuse for want of room has room now.
    public func whenRoom(_ callback: @escaping @Sendable () -> Void) { callback() }

    /// Pushes, waiting while the store has no room (for command-line clients, never on a FUSE thread).
    public func pushWaitingForRoom(_ messages: MessageBlock) throws {
        while true {
            do { return try push(messages) } catch PipeError.full {
                let room = DispatchSemaphore(value: 0)
                whenRoom { room.signal() }
                room.wait()
            }
        }
    }
}

extension PipeLog {
    /// A store that keeps one order per pipe.
    public var partitionCount: Int { 1 }
    /// Partition 0's bounds: the pipe's own, for every pipe dnpipes makes.
    public func bounds() -> (oldest: Int64, end: Int64) { bounds(partition: 0) }
    /// Partition 0's messages.
    public func fetch(from offset: Int64, maxBytes: Int) throws -> Fetched {
        try fetch(partition: 0, from: offset, maxBytes: maxBytes)
    }

    /// A store without a cheaper way finds out by fetching one message.
    public func readiness(partition: Int, from offset: Int64) -> Readiness {
        switch try? fetch(partition: partition, from: offset, maxBytes: 1) {
        case .messages(let batch): return .message(at: batch.offsets[0])
        case .nothing: return .nothing
        case .removed: return .removed
        case nil: return .message(at: offset)   // the read will report the error
        }
    }

    /// A store that does not count bytes: pipes report size 0 and cannot be read at a position.
    public func streamExtent() -> StreamExtent? { nil }
    public func streamAnchor(atOrBefore byte: Int64) -> StreamAnchor? { nil }
    /// A store that counts what it stores has nothing to wait for.
    public var isSettling: Bool { false }
    public func settle(completion: @escaping @Sendable () -> Void) { completion() }

    /// A store that is the only writer of its pipes is always up to date.
    public func synchronize(completion: @escaping @Sendable () -> Void) { completion() }

    /// Waits for `synchronize` (for command-line clients, never on a FUSE thread).
    public func synchronizeAndWait() {
        let done = DispatchSemaphore(value: 0)
        synchronize { done.signal() }
        done.wait()
    }
}

/// Pushes messages for one writer.
public protocol PipeWriter: AnyObject, Sendable {
    /// Queues messages for the pipe, in order, without waiting for durability: once it returns they are next
    /// in the pipe and visible to readers in that order. Throws if they cannot even be queued (too large for
    /// the backend, the pipe is gone, a disk error); then none of them is stored.
    ///
    /// A backend may call `accepted` (at most once, holding none of its locks) once the messages are sure
    /// to be next in the pipe, before its remaining work (encoding and writing them): the caller may then
    /// answer its writer, who goes on meanwhile. An error thrown after `accepted` concerns that remaining
    /// work (a disk error); the caller reports it at the next flush.
    ///
    /// A backend with a bounded queue throws `PipeError.full` when it cannot take the messages now; then it
    /// took none of them, and the caller tries again once `whenRoom` calls back (not holding a thread).
    /// Observers of the pipe are told from elsewhere, never from within the push.
    func push(_ messages: MessageBlock, accepted: () -> Void) throws
    /// Completes when every message pushed through this writer is durable, or with the first error.
    func flush(completion: @escaping @Sendable (Error?) -> Void)
    /// Calls `callback` once, when a push refused with `PipeError.full` may succeed.
    func whenRoom(_ callback: @escaping @Sendable () -> Void)
}

/// Errors a backend reports; the filesystem maps each to an errno.
public enum PipeError: Error, CustomStringConvertible, Equatable {
    case noSuchPipe(PipeName)
    /// The name is valid in general but not for this store (e.g. too long with the topic prefix).
    case invalidName(String)
    case removed(PipeName)
    case messageTooLarge(size: Int, limit: Int)
    case io(String)
    case unavailable(String)
    /// The backend's queue has no room for the messages now (the brokers are slow or away); none was taken.
    case full

    public var description: String {
        switch self {
        case .noSuchPipe(let n): return "no pipe named \(n)"
        case .invalidName(let s): return s
        case .removed(let n): return "pipe \(n) was deleted"
        case .messageTooLarge(let size, let limit): return "message of \(size) bytes exceeds the limit of \(limit) bytes"
        case .io(let s): return s
        case .unavailable(let s): return s
        case .full: return "no room in the queue to the brokers"
        }
    }
}
