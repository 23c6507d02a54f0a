import CFuse
import Foundation
import Logging
import DNPipesCore

/// One open file handle on a pipe or a view: its own read cursor and its own line framer.
///
/// A read that finds nothing is parked here, never waited for on a FUSE thread; it is answered when the
/// pipe's observer fires (a push, a reset, a delete), or with EINTR when the kernel interrupts it.
final class OpenPipe: Interruptible, @unchecked Sendable {
    let fh: UInt64
    let log: PipeLog
    let view: Inodes.View
    let canRead: Bool
    let canWrite: Bool
    let nonBlocking: Bool
    private let logger: Logger
    private let interrupts: InterruptTable

    private let lock = NSLock()
    /// Where this handle reads; a `.drain` handle's reader stops at the end the pipe had at open.
    private var reader: PipeReader
    private var framer: LineFramer
    private let writer: PipeWriter?
    private var observer: Int?
    private var parked: [(request: Request, size: Int, token: UInt64)] = []
    /// Writes waiting for room in the store (Kafka's local queue was full), in order, with their bytes and
    /// the time they give up.
    private var parkedWrites: [(request: Request, bytes: [UInt8], token: UInt64, deadline: DispatchTime)] = []
    /// How long a write waits for room before it fails with EIO. While it waits the kernel holds the file's
    /// lock, so other writers of the pipe (and `>` opening it) wait behind it.
    static let roomTimeout: Double = 30
    private var waitingForRoom = false
    /// A failure after a write was already answered (the store accepted it, then the disk failed): later
    /// writes of this handle are refused and every later flush reports it, so its close() says EIO.
    private var deferredFailure: Error?
    private var pollHandle: OpaquePointer?

    init(fh: UInt64, log: PipeLog, view: Inodes.View, flags: Int32, maxMessageBytes: Int,
         logger: Logger, interrupts: InterruptTable) throws {
        self.fh = fh
        self.log = log
        self.view = view
        self.logger = logger
        self.interrupts = interrupts
        let access = flags & O_ACCMODE
        canRead = access == O_RDONLY || access == O_RDWR
        canWrite = access == O_WRONLY || access == O_RDWR
        nonBlocking = flags & O_NONBLOCK != 0
        reader = PipeReader(log: log, start: view == .tail ? .end : .oldest, stopAtEnd: view == .drain)
        framer = LineFramer(maxMessageBytes: maxMessageBytes)
        writer = canWrite ? try log.makeWriter() : nil
        if canRead {
            observer = log.addObserver { [weak self] in self?.pipeChanged() }
        }
    }

    // MARK: Reading

    private typealias Outcome = PipeReader.Outcome

    /// Takes what the reader can have now. Called with the lock held.
    private func take(_ size: Int) throws -> Outcome { try reader.read(capacity: size) }

    func read(_ request: Request, size: Int) {
        lock.lock()
        defer { lock.unlock() }
        if !parked.isEmpty {
            // Keep the order of reads on one handle: this one waits behind the parked one.
            park(request, size: size)
            return
        }
        do {
            switch try take(size) {
            case .data(let bytes): request.reply(data: bytes)
            case .endOfFile: request.reply(data: [])
            case .nothing:
                if nonBlocking { request.reply(error: EAGAIN) } else { park(request, size: size) }
            }
        } catch {
            logger.error("pipe \(log.name): read failed: \(error)")
            request.reply(error: EIO)
        }
    }

    /// Called with the lock held.
    private func park(_ request: Request, size: Int) {
        parked.append((request, size, interrupts.watch(request, for: self)))
    }

    /// Answers a parked read or write with EINTR (the caller got a signal).
    func interrupt(token: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        if let i = parked.firstIndex(where: { $0.token == token }) {
            let p = parked.remove(at: i)
            interrupts.unregister(token)
            p.request.reply(error: EINTR)
        } else if let i = parkedWrites.firstIndex(where: { $0.token == token }) {
            let p = parkedWrites.remove(at: i)
            interrupts.unregister(token)
            p.request.reply(error: EINTR)
        }
    }

    /// The pipe changed: answer parked reads that can now be answered, and tell a poller.
    private func pipeChanged() {
        lock.lock()
        defer { lock.unlock() }
        while let first = parked.first {
            let outcome: Outcome
            do { outcome = try take(first.size) } catch {
                logger.error("pipe \(log.name): read failed: \(error)")
                parked.removeFirst()
                interrupts.unregister(first.token)
                first.request.reply(error: EIO)
                continue
            }
            switch outcome {
            case .nothing: break
            case .data(let bytes):
                parked.removeFirst(); interrupts.unregister(first.token); first.request.reply(data: bytes)
                continue
            case .endOfFile:
                parked.removeFirst(); interrupts.unregister(first.token); first.request.reply(data: [])
                continue
            }
            break
        }
        if let ph = pollHandle, readable() {
            fuse_lowlevel_notify_poll(ph)
            fuse_pollhandle_destroy(ph)
            pollHandle = nil
        }
    }

    /// Whether a read would return at once. Called with the lock held.
    private func readable() -> Bool { reader.isReadable() }

    func poll(_ request: Request, handle: OpaquePointer?) {
        lock.lock()
        defer { lock.unlock() }
        var events: Int32 = 0
        if canWrite { events |= Int32(POLLOUT | POLLWRNORM) }
        if canRead && readable() { events |= Int32(POLLIN | POLLRDNORM) }
        if let handle {
            if let old = pollHandle { fuse_pollhandle_destroy(old) }
            pollHandle = nil
            if canRead && events & Int32(POLLIN) == 0 { pollHandle = handle } else { fuse_pollhandle_destroy(handle) }
        }
        request.reply(poll: events)
    }

    // MARK: Writing

    func write(_ request: Request, bytes: UnsafeRawBufferPointer) {
        guard writer != nil else { request.reply(error: EBADF); return }
        lock.lock()
        defer { lock.unlock() }
        // Writes keep their order: one that comes while others wait for room waits behind them.
        if !parkedWrites.isEmpty || !tryWrite(request, bytes) {
            if nonBlocking { return request.reply(error: EAGAIN) }
            parkWrite(request, Array(bytes))
        }
    }

    /// Frames and pushes one write and answers it. Returns false, having answered nothing and changed
    /// nothing, when the store has no room for it now. Called with the lock held.
    private func tryWrite(_ request: Request, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let writer else { request.reply(error: EBADF); return true }
        if deferredFailure != nil {
            // An earlier write of this handle was not stored: refuse the rest rather than store a gap.
            request.reply(error: EIO)
            return true
        }
        let before = framer
        var answered = false
        do {
            let messages = try framer.frame(bytes)
            if !messages.isEmpty {
                // The store may accept the messages before writing them: the writer goes on meanwhile, and the
                // next write on this handle waits for our lock, so order is kept.
                try writer.push(messages) {
                    request.reply(written: bytes.count)
                    answered = true
                }
            }
            if !answered { request.reply(written: bytes.count) }
        } catch PipeError.full where !answered {
            framer = before
            return false
        } catch where answered {
            logger.error("pipe \(log.name): storing an accepted write of \(bytes.count) bytes failed, close() will report it: \(error)")
            if deferredFailure == nil { deferredFailure = error }
        } catch {
            framer = before
            if let refused = error as? LineFramer.MessageTooLarge { framer.abandon(refused) }
            let code = errno(for: error)
            logger.error("pipe \(log.name): refused a write of \(bytes.count) bytes: \(error)")
            request.reply(error: code)
        }
        return true
    }

    /// Holds a write until the store has room (never on a FUSE thread); a signal answers it with EINTR, and
    /// then nothing of it was stored. Called with the lock held.
    private func parkWrite(_ request: Request, _ bytes: [UInt8]) {
        parkedWrites.append((request, bytes, interrupts.watch(request, for: self), .now() + OpenPipe.roomTimeout))
        awaitRoom()
    }

    /// Asks the writer to call back once there may be room, once for all parked writes. Lock held.
    private func awaitRoom() {
        guard !waitingForRoom, let writer else { return }
        waitingForRoom = true
        writer.whenRoom { [weak self] in self?.retryParkedWrites() }
    }

    private func retryParkedWrites() {
        lock.lock()
        defer { lock.unlock() }
        waitingForRoom = false
        while let first = parkedWrites.first {
            if !first.bytes.withUnsafeBytes({ tryWrite(first.request, $0) }) {
                guard DispatchTime.now() >= first.deadline else { break }
                logger.error("pipe \(log.name): a write of \(first.bytes.count) bytes found no room in the queue to the brokers for \(Int(OpenPipe.roomTimeout)) s; refused (EIO)")
                first.request.reply(error: EIO)
            }
            parkedWrites.removeFirst()
            interrupts.unregister(first.token)
        }
        if !parkedWrites.isEmpty { awaitRoom() }
    }

    /// close() and fsync(): the partial last line becomes a message, and the reply waits (parked in the
    /// writer's completion) until every message of this handle is durable.
    func flush(_ request: Request) {
        guard let writer else { request.replyOK(); return }
        let name = log.name
        let logger = self.logger
        // The wait may be long (brokers away): a signal ends it with EINTR, and the messages stay on their way.
        let pending = PendingReply(request, interrupts: interrupts) {
            logger.notice("pipe \(name): close or fsync interrupted before its messages were durable; they are still on their way")
        }
        lock.lock()
        let last = framer.finish()
        let earlier = deferredFailure
        OpenPipe.pushLastLine(last, to: writer) { [self] error in
            if let error {
                logger.error("pipe \(name): could not store the last line at close: \(error)")
                let code = errno(for: error)
                return pending.answer { $0.reply(error: code) }
            }
            writer.flush { error in
                if let error = error ?? earlier {
                    logger.error("pipe \(name): messages not made durable: \(error)")
                    pending.answer { $0.reply(error: EIO) }
                } else {
                    pending.answer { $0.replyOK() }
                }
            }
        }
        lock.unlock()
    }

    /// Pushes a handle's unterminated last line (at close), then calls `then`; while the store has no room it
    /// waits for room without holding a thread.
    private static func pushLastLine(_ last: [UInt8]?, to writer: PipeWriter,
                                     then: @escaping @Sendable (Error?) -> Void) {
        guard let last else { return then(nil) }
        do {
            try writer.push(MessageBlock([last]))
            then(nil)
        } catch PipeError.full {
            writer.whenRoom { pushLastLine(last, to: writer, then: then) }
        } catch {
            then(error)
        }
    }

    /// The handle is gone: stop observing and drop a pending poll. No read can be parked: the kernel waits
    /// for outstanding reads before it releases a file.
    func release() {
        lock.lock()
        if let observer { log.removeObserver(observer) }
        observer = nil
        if let ph = pollHandle { fuse_pollhandle_destroy(ph) }
        pollHandle = nil
        let leftovers = parked
        parked = []
        let last = framer.finish()
        if let last, let writer { OpenPipe.pushLastLine(last, to: writer) { _ in writer.flush { _ in } } }
        lock.unlock()
        for p in leftovers { interrupts.unregister(p.token); p.request.reply(error: EINTR) }
    }

    private func errno(for error: Error) -> Int32 {
        switch error {
        case is LineFramer.MessageTooLarge: return EMSGSIZE
        case let e as PipeError:
            switch e {
            case .messageTooLarge: return EMSGSIZE
            case .removed, .noSuchPipe: return ENOENT
            case .invalidName: return EINVAL
            case .unavailable, .io, .full: return EIO
            }
        default: return EIO
        }
    }
}

/// Maps the small integers given to libfuse as interrupt data back to what waits (a handle's parked read, a
/// pending reply). libfuse may call the interrupt function just after the request was answered, so it must
/// not carry a pointer that could dangle.
final class InterruptTable: @unchecked Sendable {
    private let lock = NSLock()
    private var next: UInt64 = 1
    private var handles: [UInt64: Interruptible] = [:]
    private let queue = DispatchQueue(label: "dnpipes.interrupts")

    /// Hands an interrupt of `request` to `handle` from now on, and returns the token it will carry. libfuse
    /// calls the interrupt function at once if the request was already interrupted; that function only
    /// schedules work, so the caller may hold its own lock here.
    func watch(_ request: Request, for handle: Interruptible) -> UInt64 {
        lock.lock()
        next += 1
        let token = next
        handles[token] = handle
        lock.unlock()
        fuse_req_interrupt_func(request.raw, interruptCallback, UnsafeMutableRawPointer(bitPattern: UInt(token)))
        return token
    }

    func unregister(_ token: UInt64) {
        lock.lock(); defer { lock.unlock() }
        handles[token] = nil
    }

    /// Called by libfuse with its request lock held: only schedule the answer.
    func interrupted(_ token: UInt64) {
        queue.async { [self] in
            lock.lock()
            let handle = handles[token]
            lock.unlock()
            handle?.interrupt(token: token)
        }
    }
}
