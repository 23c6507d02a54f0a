import Foundation
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// A request that is answered later, from another thread, once the store is done (an open that waits for the
/// brokers, a close waiting for acknowledgements, a reset, a create or delete on the brokers), and that a
/// signal may end first. Once the kernel has handed a request to the daemon, the calling process cannot
/// even die until the request is answered: so an interrupt answers it with EINTR at once, and the store's
/// answer, when it comes, is dropped. Whatever the store was doing goes on; the caller was not told it is
/// done, only that it was interrupted.
final class PendingReply<Answer: Sendable>: Interruptible, Sendable {
    /// The reply until it is answered, and the token its interrupt carries.
    private let state: LockedValue<(reply: Reply<Answer>?, token: UInt64)>
    private let interrupts: InterruptTable
    private let interrupted: (@Sendable () -> Void)?

    /// `interrupted` runs when an interrupt takes the request, just before it is answered with EINTR (to log
    /// what was left going, or to stop waiting for it).
    init(_ reply: Reply<Answer>, interrupts: InterruptTable, interrupted: (@Sendable () -> Void)? = nil) {
        state = LockedValue((reply, 0))
        self.interrupts = interrupts
        self.interrupted = interrupted
        let token = interrupts.watch(reply, for: self)
        state.withLock { $0.token = token }
    }

    /// Takes the reply, if nobody answered it yet.
    private func take() -> (Reply<Answer>, UInt64)? {
        state.withLock { state in
            guard let reply = state.reply else { return nil }
            state.reply = nil
            return (reply, state.token)
        }
    }

    /// Answers with `body` unless an interrupt answered first.
    func answer(_ body: (Reply<Answer>) -> Void) { _ = tryAnswer(body) }

    func send(_ value: Answer) { answer { $0.send(value) } }
    func fail(_ code: Int32) { answer { $0.fail(code) } }

    /// Answers with `body` unless an interrupt answered first; returns whether it did.
    func tryAnswer(_ body: (Reply<Answer>) -> Void) -> Bool {
        guard let (reply, token) = take() else { return false }
        interrupts.unregister(token)
        body(reply)
        return true
    }

    func interrupt(token: UInt64) {
        guard let (reply, _) = take() else { return }
        interrupts.unregister(token)
        // Before the answer: a read restarted after the signal (SA_RESTART) may come at once, and must find
        // the handle no longer waiting.
        interrupted?()
        reply.fail(EINTR)
    }
}
