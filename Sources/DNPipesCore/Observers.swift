/// A set of callbacks to run when a pipe changes. Callbacks run outside the lock, so they may call back into
/// the pipe.
public final class Observers: Sendable {
    private let state = LockedValue<(next: Int, callbacks: [Int: @Sendable () -> Void])>((1, [:]))

    public init() {}

    public func add(_ callback: @escaping @Sendable () -> Void) -> Int {
        state.withLock { state in
            let token = state.next
            state.next += 1
            state.callbacks[token] = callback
            return token
        }
    }

    public func remove(_ token: Int) {
        state.withLock { _ = $0.callbacks.removeValue(forKey: token) }
    }

    /// Whether anyone observes (a writer with no reader to tell need not schedule a notification).
    public var isEmpty: Bool { state.withLock { $0.callbacks.isEmpty } }

    public func notify() {
        for callback in state.withLock({ Array($0.callbacks.values) }) { callback() }
    }
}
