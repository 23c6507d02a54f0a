import CFuse
import Foundation

/// Maps the small integers given to libfuse as interrupt data back to what waits (a handle's parked read, a
/// pending reply). libfuse may call the interrupt function just after the request was answered, so it must
/// not carry a pointer that could dangle.
// @unchecked Sendable: `next` and `handles` are guarded by `lock`.
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
