import Dispatch
import XCTest
import DNPipesCore
@testable import DNPipesFileSystem

/// Records the answers of one request: hands out its `Reply`, and lets a test wait for the answer, count
/// the answers (exactly one, or the filesystem broke its promise) and interrupt the request as the kernel
/// would, through the token the filesystem armed.
final class ReplyRecorder<Answer: Sendable>: Sendable {
    private let state = LockedValue<(outcomes: [ReplyOutcome<Answer>], token: UInt64?)>(([], nil))
    private let answered = DispatchSemaphore(value: 0)

    /// A fresh token for the request; its answers land here.
    func reply() -> Reply<Answer> {
        Reply(armInterrupt: { [self] token in state.withLock { $0.token = token } }) { [self] outcome in
            state.withLock { $0.outcomes.append(outcome) }
            answered.signal()
        }
    }

    var outcomes: [ReplyOutcome<Answer>] { state.withLock { $0.outcomes } }
    var count: Int { outcomes.count }

    /// The token an interrupt of the request carries, once the filesystem parked it.
    var interruptToken: UInt64? { state.withLock { $0.token } }

    /// The first answer, waited for up to `seconds`; nil when none came.
    func outcome(within seconds: Double = 10) -> ReplyOutcome<Answer>? {
        if let first = outcomes.first { return first }
        guard answered.wait(timeout: .now() + seconds) == .success else { return nil }
        answered.signal()
        return outcomes.first
    }

    /// The answer, failing the test on an errno or none at all.
    func answer(within seconds: Double = 10, file: StaticString = #filePath, line: UInt = #line) -> Answer? {
        switch outcome(within: seconds) {
        case .answer(let answer)?: return answer
        case .error(let code)?: XCTFail("answered \(errnoName(code))", file: file, line: line); return nil
        case nil: XCTFail("no answer within \(seconds) s", file: file, line: line); return nil
        }
    }

    /// The errno the request was answered with (nil for an answer, or none).
    func error(within seconds: Double = 10) -> Int32? {
        if case .error(let code)? = outcome(within: seconds) { return code }
        return nil
    }

    /// Whether the request is still unanswered after `seconds`.
    func isPending(after seconds: Double = 0.2) -> Bool { outcome(within: seconds) == nil }
}

/// Counts the polls a test's `poll` answered were told.
final class RecordingPollWaiter: PollWaiter {
    private let state = LockedValue<(notified: Int, discarded: Int)>((0, 0))
    func notify() { state.withLock { $0.notified += 1 } }
    func discard() { state.withLock { $0.discarded += 1 } }
    var notified: Int { state.withLock { $0.notified } }
    var discarded: Int { state.withLock { $0.discarded } }
}
