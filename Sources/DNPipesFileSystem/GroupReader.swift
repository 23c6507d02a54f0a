import Foundation
import Logging
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// What the file operations need of an open handle: a pipe's (`OpenPipe`) or a group reader's.
protocol OpenFile: AnyObject, Sendable {
    /// The pipe read or written (a group reader's is the pipe its group reads).
    var pipeName: PipeName { get }
    var canRead: Bool { get }
    func read(_ reply: Reply<[UInt8]>, size: Int, offset: Int64, flags: Int32)
    /// `bytes` are valid only during the call.
    func write(_ reply: Reply<Int>, bytes: UnsafeRawBufferPointer, flags: Int32)
    func flush(_ reply: Reply<Done>)
    func poll(_ reply: Reply<Int32>, waiter: (any PollWaiter)?)
    func release()
}

extension OpenPipe: OpenFile {
    var pipeName: PipeName { log.name }
}

/// One open handle on `.group/GROUP/PIPE` or `.take/GROUP/PIPE`: a reader that is a member of the group, so
/// that every message of the pipe goes to one reader of the group.
///
/// A read returns at most one message (the rest of a longer one comes with the next reads), so a shell's
/// `read` or `head -n1` never takes more than it uses. In `.group/` a message is done when the handle reads
/// again after its last byte; closed before that, it goes back to the group. In `.take/` it is done once its
/// last byte is read. A read that finds nothing is parked with the group member and answered from there.
final class GroupReader: OpenFile, Sendable {
    let canRead = true
    var pipeName: PipeName { member.pipeName }
    private let member: GroupMember
    /// `.take/`: done at the last byte rather than at the next read.
    private let oneShot: Bool
    private let interrupts: InterruptTable
    private let logger: Logger

    private struct State {
        /// The message being read (with its newline), its offset, and how much of it went out.
        var message: [UInt8]?
        var offset: Int64 = 0
        var sent = 0
        /// A read is parked with the member.
        var waiting = false
        var poller: (any PollWaiter)?
    }
    private let state = LockedValue(State())
    private let availabilityToken = LockedValue<Int?>(nil)
    private static let waiterIDs = LockedValue<UInt64>(0)

    init(member: GroupMember, oneShot: Bool, interrupts: InterruptTable, logger: Logger) {
        self.member = member
        self.oneShot = oneShot
        self.interrupts = interrupts
        self.logger = logger
        member.readerOpened()
        let token = member.addAvailabilityObserver { [weak self] in self?.availabilityChanged() }
        availabilityToken.withLock { $0 = token }
    }

    private enum Step {
        case reply([UInt8], done: Int64?)
        case take(done: Int64?)
        case busy
    }

    func read(_ reply: Reply<[UInt8]>, size: Int, offset: Int64, flags: Int32) {
        let step = state.withLock { s -> Step in
            if s.waiting { return .busy }
            if let message = s.message, s.sent < message.count {
                let end = min(message.count, s.sent + size)
                let chunk = Array(message[s.sent..<end])
                s.sent = end
                var done: Int64?
                if end == message.count && oneShot { done = s.offset; s.message = nil }
                return .reply(chunk, done: done)
            }
            // The message was read to its end and this is the next read: it is done.
            let done = s.message == nil ? nil : s.offset
            s.message = nil
            s.waiting = true
            return .take(done: done)
        }
        switch step {
        case .busy:
            logger.notice("a second read at once on one group handle refused (EBUSY): each read takes one message in turn",
                          metadata: ["group": "\(member.group)", "pipe": "\(member.pipeName)"])
            reply.fail(EBUSY)
        case .reply(let chunk, let done):
            if let done { member.done(done) }
            reply.send(chunk)
        case .take(let done):
            if let done { member.done(done) }
            take(reply, size: size, nonBlocking: flags & O_NONBLOCK != 0)
        }
    }

    private func take(_ reply: Reply<[UInt8]>, size: Int, nonBlocking: Bool) {
        let id = GroupReader.waiterIDs.withLock { $0 += 1; return $0 }
        let member = self.member
        let pending = PendingReply(reply, interrupts: interrupts) { [weak self] in
            member.cancel(waiter: id)
            self?.state.withLock { $0.waiting = false }
        }
        let oneShot = self.oneShot
        member.take(waiter: id, nonBlocking: nonBlocking) { [weak self] grant in
            guard let self else { return false }
            switch grant {
            case .message(let offset, var bytes):
                bytes.append(UInt8(ascii: "\n"))
                let framed = bytes
                var doneNow = false
                let answered = pending.tryAnswer { reply in
                    let chunk = self.state.withLock { s -> [UInt8] in
                        s.waiting = false
                        let end = min(framed.count, size)
                        if end == framed.count && oneShot {
                            doneNow = true
                        } else {
                            s.message = framed
                            s.offset = offset
                            s.sent = end
                        }
                        return Array(framed[0..<end])
                    }
                    reply.send(chunk)
                }
                if answered && doneNow { member.done(offset) }
                return answered
            case .wouldBlock:
                pending.answer { reply in
                    self.state.withLock { $0.waiting = false }
                    reply.fail(EAGAIN)
                }
                return true
            case .removed:
                pending.answer { reply in
                    self.state.withLock { $0.waiting = false }
                    reply.send([])
                }
                return true
            }
        }
    }

    func write(_ reply: Reply<Int>, bytes: UnsafeRawBufferPointer, flags: Int32) { reply.fail(EBADF) }
    func flush(_ reply: Reply<Done>) { reply.ok() }

    func poll(_ reply: Reply<Int32>, waiter: (any PollWaiter)?) {
        var drop: [any PollWaiter] = []
        let readable = state.withLock { s -> Bool in
            let readable = (s.message.map { s.sent < $0.count } ?? false) || member.mayHaveMessage
            if let old = s.poller { drop.append(old) }
            s.poller = nil
            if let waiter { if readable { drop.append(waiter) } else { s.poller = waiter } }
            return readable
        }
        drop.forEach { $0.discard() }
        reply.send(readable ? Int32(POLLIN | POLLRDNORM) : 0)
    }

    private func availabilityChanged() {
        guard member.mayHaveMessage, let poller = state.withLock({ s -> (any PollWaiter)? in
            defer { s.poller = nil }
            return s.poller
        }) else { return }
        poller.notify()
    }

    /// A message not done yet goes back to the group. No read is parked: the kernel waits for outstanding
    /// reads before it releases a file.
    func release() {
        if let token = availabilityToken.withLock({ $0 }) { member.removeAvailabilityObserver(token) }
        let (unfinished, poller) = state.withLock { s -> (Int64?, (any PollWaiter)?) in
            defer { s.message = nil; s.poller = nil }
            return (s.message == nil ? nil : s.offset, s.poller)
        }
        poller?.discard()
        if let unfinished { member.giveBack(unfinished) }
        member.readerClosed()
    }
}
