import Foundation
import DNPipesCore

/// What the interrupt table can hand an interrupt to.
protocol Interruptible: AnyObject, Sendable {
    func interrupt(token: UInt64)
}

/// Maps the small integers an interrupt carries back to what waits (a handle's parked read, a pending
/// reply). The kernel's interrupt may come just after the request was answered, so it must not carry a
/// pointer that could dangle: a token no longer here is ignored.
final class InterruptTable: Sendable {
    private let state = LockedValue<(next: UInt64, handles: [UInt64: any Interruptible])>((1, [:]))
    private let queue = DispatchQueue(label: "dnpipes.interrupts")

    /// Hands an interrupt of `reply`'s request to `handle` from now on, and returns the token it will carry.
    /// Arming the interrupt may lead to `interrupted` at once (a request interrupted already); that only
    /// schedules work, so the caller may hold its own lock here.
    func watch<Answer>(_ reply: Reply<Answer>, for handle: any Interruptible) -> UInt64 {
        let token = state.withLock { state -> UInt64 in
            state.next += 1
            state.handles[state.next] = handle
            return state.next
        }
        reply.armInterrupt(token)
        return token
    }

    func unregister(_ token: UInt64) {
        state.withLock { _ = $0.handles.removeValue(forKey: token) }
    }

    /// The request that carries `token` was interrupted. Called by the kernel's side with its own lock held
    /// (libfuse's request lock): only schedules the answer.
    func interrupted(_ token: UInt64) {
        queue.async { [self] in
            state.withLock { $0.handles[token] }?.interrupt(token: token)
        }
    }
}
