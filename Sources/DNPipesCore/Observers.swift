import Foundation

/// A set of callbacks to run when a pipe changes. Callbacks run outside the lock, so they may call back into
/// the pipe.
public final class Observers: @unchecked Sendable {
    private let lock = NSLock()
    private var next = 1
    private var callbacks: [Int: @Sendable () -> Void] = [:]

    public init() {}

    public func add(_ callback: @escaping @Sendable () -> Void) -> Int {
        lock.lock(); defer { lock.unlock() }
        let token = next
        next += 1
        callbacks[token] = callback
        return token
    }

    public func remove(_ token: Int) {
        lock.lock(); defer { lock.unlock() }
        callbacks[token] = nil
    }

    public func notify() {
        lock.lock()
        let all = Array(callbacks.values)
        lock.unlock()
        for callback in all { callback() }
    }
}
