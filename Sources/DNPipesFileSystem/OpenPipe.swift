import Foundation
import Logging
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// One open file handle on a pipe or a view: its own positioned reader and its own line framer.
///
/// A read that finds nothing is parked here, never waited for on a FUSE thread; it is answered when the
/// pipe's observer fires (a push, a reset, a delete), or with EINTR when the kernel interrupts it.
///
/// Reading and writing keep their state in two lock boxes, so that a handle open for both (`O_RDWR`) can
/// be told of its own push while it writes. Replies, poll notifications and callbacks to the store that may
/// call back (`whenRoom`) are decided under a lock and done after it is released.
final class OpenPipe: Interruptible, Sendable {
    let fh: UInt64
    let log: PipeLog
    let view: Inodes.View
    let canRead: Bool
    let canWrite: Bool
    /// A `.drain` handle read through the kernel's page cache: a pipe of one partition whose every message
    /// up to the end is counted in byte positions, none lost to retention, so what lies at each position is
    /// known, and no longer than `cachedDrainBytes`. Bash's `read` then takes its 4 KiB at a time from the
    /// cache and seeks back, with no round trip per line. The kernel takes a short reply for the end of the
    /// file, so its reads are answered whole.
    let isCached: Bool
    /// Longer drains are read with direct I/O: their pages would double the page cache the store's own files
    /// already take, and a reader of that much is a bulk one (`cat`, a program), which the kernel serves
    /// faster without the cache's extra copy (about 0.6x of a plain file's speed against 0.35x cached, on
    /// the README's machine); a shell loop over one pays a round trip per line instead.
    static let cachedDrainBytes: Int64 = 16 << 20
    private let logger: Logger
    private let interrupts: InterruptTable
    private let writer: PipeWriter?
    /// The pipe observer's token, once registered (after the handle is made: the observer refers to it).
    private let observer = LockedValue<Int?>(nil)
    /// What this handle pushes and delivers, counted for the pipe (see `FuseMetrics`).
    private let counters: PipeCounters

    private struct ParkedRead {
        var reply: Reply<[UInt8]>
        var size: Int
        var offset: Int64
        var token: UInt64
    }

    private struct ReadState {
        /// Where this handle reads; a `.drain` handle's reader stops at the end the pipe had at open.
        var reader: PositionedReader
        var parked: [ParkedRead] = []
        var poller: (any PollWaiter)?
    }

    private struct ParkedWrite {
        var reply: Reply<Int>
        var bytes: [UInt8]
        var token: UInt64
        var deadline: DispatchTime
    }

    private struct WriteState {
        var framer: LineFramer
        /// Writes waiting for room in the store (Kafka's local queue was full), in order.
        var parked: [ParkedWrite] = []
        var waitingForRoom = false
        /// Bytes of this handle's writes the kernel was told were written: they moved the file position that
        /// its reads carry (see `read`).
        var accepted: Int64 = 0
        /// Counts changes of the framer, so that a push that failed undoes its framing only if nothing
        /// (a close ending the partial line) changed the framer since.
        var generation = 0
        /// The first write of this handle that was refused (a line over the limit, a store error): every
        /// later fsync and the close report it, so a writer that checks only its close() learns of it.
        var refusal: Int32?
    }

    private let reading: LockedValue<ReadState>?
    private let writing: LockedValue<WriteState>?

    /// How long a write waits for room before it fails with EIO. While it waits the kernel holds the file's
    /// lock, so other writers of the pipe (and `>` opening it) wait behind it.
    static let roomTimeout: Double = 30

    init(fh: UInt64, log: PipeLog, view: Inodes.View, flags: Int32, maxMessageBytes: Int,
         logger: Logger, interrupts: InterruptTable) throws {
        self.fh = fh
        self.log = log
        self.view = view
        self.logger = logger
        self.interrupts = interrupts
        counters = PipeSeries.shared.counters(for: log.name)
        let access = flags & O_ACCMODE
        canRead = access == O_RDONLY || access == O_RDWR
        canWrite = access == O_WRONLY || access == O_RDWR
        writer = canWrite ? try log.makeWriter() : nil
        writing = canWrite ? LockedValue(WriteState(framer: LineFramer(maxMessageBytes: maxMessageBytes))) : nil
        if canRead {
            let reader = PositionedReader(log: log, start: view == .tail ? .end : .oldest, stopAtEnd: view == .drain)
            reading = LockedValue(ReadState(reader: reader))
        } else {
            reading = nil
        }
        isCached = view == .drain && !canWrite && OpenPipe.positionsKnown(log, upTo: OpenPipe.cachedDrainBytes)
        if canRead {
            let token = log.addObserver { [weak self] in self?.pipeChanged() }
            observer.withLock { $0 = token }
        }
    }

    /// Whether every byte position of `log`'s stream, from its oldest message to its end, is known, and
    /// the stream holds at most `limit` bytes.
    private static func positionsKnown(_ log: PipeLog, upTo limit: Int64) -> Bool {
        guard log.partitionCount == 1, !log.isSettling, let extent = log.streamExtent() else { return false }
        let bounds = log.bounds()
        return extent.countedEnd == bounds.end && extent.origin == bounds.oldest && extent.size <= limit
    }

    // MARK: Reading

    /// A read at file position `offset`. `flags` are the file's flags now (fcntl may have changed
    /// O_NONBLOCK since the open).
    ///
    /// On a handle open for reading and writing the kernel moves one file position for both, so a read
    /// after a write would start past what the handle wrote. Such a handle reads as a FIFO opened `O_RDWR`
    /// does: its reads do not count its writes, so it reads its own messages too (`exec 3<>P; echo a >&3;
    /// read l <&3` gets `a`).
    func read(_ reply: Reply<[UInt8]>, size: Int, offset fileOffset: Int64, flags: Int32) {
        guard let reading else { return reply.fail(EBADF) }
        let nonBlocking = flags & O_NONBLOCK != 0
        let offset = max(0, fileOffset - (writing?.withLock { $0.accepted } ?? 0))
        let answer: ReplyOutcome<[UInt8]>? = reading.withLock { state in
            // Keep the order of reads on one handle: this one waits behind a parked one.
            if state.parked.isEmpty, let answer = take(&state, size: size, offset: offset) { return answer }
            if nonBlocking { return .error(EAGAIN) }
            state.parked.append(ParkedRead(reply: reply, size: size, offset: offset,
                                           token: interrupts.watch(reply, for: self)))
            return nil
        }
        if let answer { reply.finish(answer) }
    }

    /// What a read can have now, or nil when it must wait. Called under the reading lock.
    private func take(_ state: inout ReadState, size: Int, offset: Int64) -> ReplyOutcome<[UInt8]>? {
        do {
            switch try state.reader.read(at: offset, capacity: size, whole: isCached) {
            case .data(let bytes): counters.delivered(bytes); return .answer(bytes)
            case .endOfFile: return .answer([])
            case .nothing: return nil
            }
        } catch {
            logger.error("read failed", metadata: ["pipe": "\(log.name)", "error": "\(error)"])
            return .error(EIO)
        }
    }

    /// Answers a parked read or write with EINTR (the caller got a signal).
    func interrupt(token: UInt64) {
        if let read = reading?.withLock({ state -> Reply<[UInt8]>? in
            guard let i = state.parked.firstIndex(where: { $0.token == token }) else { return nil }
            return state.parked.remove(at: i).reply
        }) {
            interrupts.unregister(token)
            return read.fail(EINTR)
        }
        guard let write = writing?.withLock({ state -> Reply<Int>? in
            guard let i = state.parked.firstIndex(where: { $0.token == token }) else { return nil }
            return state.parked.remove(at: i).reply
        }) else { return }
        interrupts.unregister(token)
        write.fail(EINTR)
    }

    /// The pipe changed: answer parked reads that can now be answered, and tell a poller.
    private func pipeChanged() {
        guard let reading else { return }
        let (answers, poller) = reading.withLock { state -> ([(ParkedRead, ReplyOutcome<[UInt8]>)], (any PollWaiter)?) in
            var answers: [(ParkedRead, ReplyOutcome<[UInt8]>)] = []
            while let first = state.parked.first, let answer = take(&state, size: first.size, offset: first.offset) {
                answers.append((state.parked.removeFirst(), answer))
            }
            var poller: (any PollWaiter)?
            if state.poller != nil && state.reader.isReadable() {
                poller = state.poller
                state.poller = nil
            }
            return (answers, poller)
        }
        for (parked, answer) in answers {
            interrupts.unregister(parked.token)
            parked.reply.finish(answer)
        }
        poller?.notify()
    }

    /// Answers a poll with the events the handle has now; a poller of a handle not readable yet is kept and
    /// told once it is (one at a time: a newer one replaces it).
    func poll(_ reply: Reply<Int32>, waiter: (any PollWaiter)?) {
        var events: Int32 = 0
        if canWrite { events |= Int32(POLLOUT | POLLWRNORM) }
        var drop: [any PollWaiter] = []
        if let reading {
            reading.withLock { state in
                let readable = state.reader.isReadable()
                if readable { events |= Int32(POLLIN | POLLRDNORM) }
                guard let waiter else { return }
                if let old = state.poller { drop.append(old) }
                state.poller = nil
                if readable { drop.append(waiter) } else { state.poller = waiter }
            }
        } else if let waiter {
            drop.append(waiter)
        }
        drop.forEach { $0.discard() }
        reply.send(events)
    }

    // MARK: Writing

    /// A write is framed under the writing lock and pushed after it is released: the store may accept it
    /// before encoding and writing it (see `PipeWriter.push`), and the write is answered then, with no lock
    /// held, so the writer's next write comes while this one is written. The kernel sends a file's next
    /// write only once this one is answered, so writes keep their order. A failure after the answer is
    /// reported at the next fsync and at close.
    func write(_ reply: Reply<Int>, bytes: UnsafeRawBufferPointer, flags: Int32) {
        guard let writing, let writer else { return reply.fail(EBADF) }
        let nonBlocking = flags & O_NONBLOCK != 0
        enum Step { case answer(ReplyOutcome<Int>), push(MessageBlock, LineFramer, generation: Int), park }
        let step = writing.withLock { state -> Step in
            // Writes keep their order: one that comes while others wait for room waits behind them.
            guard state.parked.isEmpty else { return .park }
            let before = state.framer
            do {
                let messages = try state.framer.frame(bytes)
                state.accepted += Int64(bytes.count)
                state.generation += 1
                return messages.isEmpty ? .answer(.answer(bytes.count)) : .push(messages, before, generation: state.generation)
            } catch {
                return .answer(refuse(&state, bytes.count, error, framerBefore: before))
            }
        }
        switch step {
        case .answer(let answer):
            reply.finish(answer)
        case .park:
            park(reply, bytes, nonBlocking: nonBlocking)
        case .push(let messages, let before, let generation):
            var answered = false
            do {
                try writer.push(messages) {
                    reply.send(bytes.count)
                    answered = true
                }
                if !answered { reply.send(bytes.count) }
                counters.pushed(messages)
            } catch PipeError.full where !answered {
                // Nothing was taken: undo the framing (unless a close ended the line meanwhile) and wait.
                writing.withLock { state in
                    guard state.generation == generation else { return }
                    state.framer = before
                    state.accepted -= Int64(bytes.count)
                }
                park(reply, bytes, nonBlocking: nonBlocking)
            } catch where answered {
                writing.withLock { if $0.refusal == nil { $0.refusal = EIO } }
                logger.error("storing an accepted write failed; its fsync and close will fail",
                             metadata: ["pipe": "\(log.name)", "bytes": "\(bytes.count)", "error": "\(error)"])
            } catch {
                let answer = writing.withLock { state -> ReplyOutcome<Int> in
                    if state.generation == generation { state.accepted -= Int64(bytes.count) }
                    return refuse(&state, bytes.count, error, framerBefore: state.generation == generation ? before : nil)
                }
                reply.finish(answer)
            }
        }
    }

    /// Parks a write that found no room (or waits behind parked ones), or answers EAGAIN to a non-blocking one.
    private func park(_ reply: Reply<Int>, _ bytes: UnsafeRawBufferPointer, nonBlocking: Bool) {
        guard let writing, let writer else { return reply.fail(EBADF) }
        if nonBlocking { return reply.fail(EAGAIN) }
        let awaitRoom = writing.withLock { state -> Bool in
            state.parked.append(ParkedWrite(reply: reply, bytes: Array(bytes),
                                            token: interrupts.watch(reply, for: self),
                                            deadline: .now() + OpenPipe.roomTimeout))
            return claimRoomWait(&state)
        }
        if awaitRoom { writer.whenRoom { [weak self] in self?.retryParkedWrites() } }
    }

    /// A write refused whole: the framer as it was before it (nothing of the write is stored), the refusal
    /// kept for the handle's fsync and close, one log line. Called under the writing lock.
    private func refuse(_ state: inout WriteState, _ count: Int, _ error: Error, framerBefore: LineFramer?) -> ReplyOutcome<Int> {
        if let framerBefore { state.framer = framerBefore }
        if let refused = error as? LineFramer.MessageTooLarge { state.framer.abandon(refused) }
        let code = OpenPipe.errnoCode(for: error)
        if state.refusal == nil { state.refusal = code }
        logger.error("refused a write; its fsync and close will fail too",
                     metadata: ["pipe": "\(log.name)", "bytes": "\(count)", "errno": "\(errnoName(code))",
                                "error": "\(error)"])
        return .error(code)
    }

    /// Frames and pushes a parked write (one that waited for room in Kafka's queue). Returns its answer, or
    /// nil, having changed nothing, when the store still has no room. Called under the writing lock: such a
    /// push neither waits nor tells observers nor calls `accepted` (see `PipeWriter.push`), so holding the
    /// lock across it calls nothing out.
    private func tryWrite(_ state: inout WriteState, _ writer: PipeWriter, _ bytes: UnsafeRawBufferPointer) -> ReplyOutcome<Int>? {
        let before = state.framer
        do {
            let messages = try state.framer.frame(bytes)
            if !messages.isEmpty { try writer.push(messages) }
            counters.pushed(messages)
            state.accepted += Int64(bytes.count)
            state.generation += 1
            return .answer(bytes.count)
        } catch PipeError.full {
            state.framer = before
            return nil
        } catch {
            return refuse(&state, bytes.count, error, framerBefore: before)
        }
    }

    /// Whether the caller must ask the writer for a callback once there is room (once for all parked writes).
    private func claimRoomWait(_ state: inout WriteState) -> Bool {
        guard !state.waitingForRoom else { return false }
        state.waitingForRoom = true
        return true
    }

    private func retryParkedWrites() {
        guard let writing, let writer else { return }
        let (answers, awaitRoom) = writing.withLock { state -> ([(ParkedWrite, ReplyOutcome<Int>)], Bool) in
            state.waitingForRoom = false
            var answers: [(ParkedWrite, ReplyOutcome<Int>)] = []
            while let first = state.parked.first {
                var answer = first.bytes.withUnsafeBytes { tryWrite(&state, writer, $0) }
                if answer == nil {
                    guard DispatchTime.now() >= first.deadline else { break }
                    logger.error("a write found no room in the queue to the brokers; refused (EIO)",
                                 metadata: ["pipe": "\(log.name)", "bytes": "\(first.bytes.count)",
                                            "waited_s": "\(Int(OpenPipe.roomTimeout))"])
                    if state.refusal == nil { state.refusal = EIO }
                    answer = .error(EIO)
                }
                answers.append((state.parked.removeFirst(), answer!))
            }
            return (answers, !state.parked.isEmpty && claimRoomWait(&state))
        }
        for (parked, answer) in answers {
            interrupts.unregister(parked.token)
            parked.reply.finish(answer)
        }
        if awaitRoom { writer.whenRoom { [weak self] in self?.retryParkedWrites() } }
    }

    /// close() and fsync(): the partial last line becomes a message, and the reply waits (parked in the
    /// writer's completion) until every message of this handle is durable. A handle that had a write
    /// refused fails with that write's errno.
    func flush(_ reply: Reply<Done>) {
        guard let writing, let writer else { return reply.ok() }
        let name = log.name
        let logger = self.logger
        // The wait may be long (brokers away): a signal ends it with EINTR, and the messages stay on their way.
        let pending = PendingReply(reply, interrupts: interrupts) {
            logger.notice("close or fsync interrupted before its messages were durable; they are still on their way",
                          metadata: ["pipe": "\(name)"])
        }
        let last = finishLine(writing)
        let counters = self.counters
        OpenPipe.pushLastLine(last, to: writer) { error in
            if error == nil, let last { counters.pushed(MessageBlock([last])) }
            if let error {
                logger.error("could not store the last line at close", metadata: ["pipe": "\(name)", "error": "\(error)"])
                let code = OpenPipe.errnoCode(for: error)
                return pending.fail(code)
            }
            writer.flush { error in
                // Read now, not at the start: a write accepted before this flush may have failed since.
                let refusal = writing.withLock { $0.refusal }
                if let error {
                    logger.error("messages not made durable", metadata: ["pipe": "\(name)", "error": "\(error)"])
                    pending.fail(EIO)
                } else if let refusal {
                    pending.fail(refusal)
                } else {
                    pending.send(Done())
                }
            }
        }
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
        if let token = observer.withLock({ $0 }) { log.removeObserver(token) }
        let (leftovers, poller) = reading?.withLock { state -> ([ParkedRead], (any PollWaiter)?) in
            defer { state.parked = []; state.poller = nil }
            return (state.parked, state.poller)
        } ?? ([], nil)
        poller?.discard()
        if let writing, let writer, let last = finishLine(writing) {
            OpenPipe.pushLastLine(last, to: writer) { [counters] error in
                if error == nil { counters.pushed(MessageBlock([last])) }
                writer.flush { _ in }
            }
        }
        for p in leftovers { interrupts.unregister(p.token); p.reply.fail(EINTR) }
    }

    /// Ends the partial line (at close, fsync or release): a framing undone after this would bring it back.
    private func finishLine(_ writing: LockedValue<WriteState>) -> [UInt8]? {
        writing.withLock { state in
            state.generation += 1
            return state.framer.finish()
        }
    }

    static func errnoCode(for error: Error) -> Int32 {
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

/// The symbolic name of an errno, for log lines (`EMSGSIZE`, not "Message too long" alone).
public func errnoName(_ code: Int32) -> String {
    switch code {
    case EMSGSIZE: return "EMSGSIZE"
    case EIO: return "EIO"
    case ENOENT: return "ENOENT"
    case EINVAL: return "EINVAL"
    case EAGAIN: return "EAGAIN"
    case EINTR: return "EINTR"
    case EPERM: return "EPERM"
    case EACCES: return "EACCES"
    default: return "errno \(code)"
    }
}
