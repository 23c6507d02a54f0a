import Dispatch
import Foundation

/// Runs an operation that reports through a completion handler and waits for it. For command-line clients
/// and tests only: the filesystem never waits like this.
public func awaitCompletion(_ start: (@escaping @Sendable (Error?) -> Void) -> Void) -> Error? {
    final class Outcome: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        var error: Error?
    }
    let outcome = Outcome()
    start { error in
        outcome.error = error
        outcome.done.signal()
    }
    outcome.done.wait()
    return outcome.error
}
