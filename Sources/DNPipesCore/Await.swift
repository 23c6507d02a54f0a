import Dispatch
import Foundation

/// Runs an operation that reports through a completion handler and waits for it. For command-line clients
/// and tests only: the filesystem never waits like this.
public func awaitCompletion(_ start: (@escaping @Sendable (Error?) -> Void) -> Void) -> Error? {
    let done = DispatchSemaphore(value: 0)
    let outcome = LockedValue<Error?>(nil)
    start { error in
        outcome.withLock { $0 = error }
        done.signal()
    }
    done.wait()
    return outcome.withLock { $0 }
}
