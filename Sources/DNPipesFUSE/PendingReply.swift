import CFuse
import Foundation
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// What the interrupt table can hand an interrupt to.
protocol Interruptible: AnyObject {
    func interrupt(token: UInt64)
}

/// A request that is answered later, from another thread, once the store is done (an open that waits for the
/// brokers, a close waiting for acknowledgements, a reset, a create or delete on the brokers), and that a
/// signal may end first. Once the kernel has handed a request to the daemon, the calling process cannot
/// even die until the request is answered: so an interrupt answers it with EINTR at once, and the store's
/// answer, when it comes, is dropped. Whatever the store was doing goes on; the caller was not told it is
/// done, only that it was interrupted.
final class PendingReply: Interruptible, Sendable {
    /// The request until it is answered, and the token its interrupt carries.
    private let state: LockedValue<(request: Request?, token: UInt64)>
    private let interrupts: InterruptTable
    private let interrupted: (@Sendable () -> Void)?

    /// `interrupted` runs when an interrupt takes the request, just before it is answered with EINTR (to log
    /// what was left going, or to stop waiting for it).
    init(_ request: Request, interrupts: InterruptTable, interrupted: (@Sendable () -> Void)? = nil) {
        state = LockedValue((request, 0))
        self.interrupts = interrupts
        self.interrupted = interrupted
        let token = interrupts.watch(request, for: self)
        state.withLock { $0.token = token }
    }

    /// Takes the request, if nobody answered it yet.
    private func take() -> (Request, UInt64)? {
        state.withLock { state in
            guard let request = state.request else { return nil }
            state.request = nil
            return (request, state.token)
        }
    }

    /// Answers with `reply` unless an interrupt answered first.
    func answer(_ reply: (Request) -> Void) { _ = tryAnswer(reply) }

    /// Answers with `reply` unless an interrupt answered first; returns whether it did.
    func tryAnswer(_ reply: (Request) -> Void) -> Bool {
        guard let (request, token) = take() else { return false }
        interrupts.unregister(token)
        reply(request)
        return true
    }

    func interrupt(token: UInt64) {
        guard let (request, _) = take() else { return }
        interrupts.unregister(token)
        // Before the answer: a read restarted after the signal (SA_RESTART) may come at once, and must find
        // the handle no longer waiting.
        interrupted?()
        request.reply(error: EINTR)
    }
}
