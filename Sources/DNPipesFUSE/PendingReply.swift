import CFuse
import Foundation
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
final class PendingReply: Interruptible, @unchecked Sendable {
    private let lock = NSLock()
    private var request: Request?
    private let interrupts: InterruptTable
    private var token: UInt64 = 0
    private let interrupted: (@Sendable () -> Void)?

    /// `interrupted` runs when an interrupt answered the request (to log what was left going).
    init(_ request: Request, interrupts: InterruptTable, interrupted: (@Sendable () -> Void)? = nil) {
        self.request = request
        self.interrupts = interrupts
        self.interrupted = interrupted
        token = interrupts.watch(request, for: self)
    }

    /// Answers with `reply` unless an interrupt answered first.
    func answer(_ reply: (Request) -> Void) {
        lock.lock()
        guard let request else { lock.unlock(); return }
        self.request = nil
        lock.unlock()
        interrupts.unregister(token)
        reply(request)
    }

    func interrupt(token: UInt64) {
        lock.lock()
        guard let request else { lock.unlock(); return }
        self.request = nil
        lock.unlock()
        interrupts.unregister(token)
        request.reply(error: EINTR)
        interrupted?()
    }
}
