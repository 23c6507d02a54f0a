import Foundation

/// A value that is only reached under its lock, for the span of one closure: no lock()/unlock() pairs on
/// every early return, and nothing can keep the value past the lock. The closure must not call out (reply to
/// the kernel, tell observers, run a callback): it returns what to do, and the caller does it after.
///
/// Sendable whatever `Value` is (as swift-nio's lock boxes are for the values they guard): the value is
/// only read or written inside `withLock`, under `lock`, so it never crosses threads unguarded.
public final class LockedValue<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    @discardableResult
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
