import Foundation
import Logging
import DNPipesCore

/// How a request ends: with its answer, or with an errno.
public enum ReplyOutcome<Answer: Sendable>: Sendable {
    case answer(Answer)
    case error(Int32)
}

/// The token of one request to the filesystem, answered exactly once through `send`, `fail` or `finish`.
/// Whoever asks (the FUSE adapter, a test) says what an answer does and how an interrupt of the request
/// reaches the filesystem; the filesystem only answers. The answer's type is the operation's (a read is
/// answered with bytes, a write with a count, a lookup with attributes), so no request gets another's.
///
/// A request may be answered from any thread, long after the call that brought it returned. Only the first
/// answer is delivered: a second is dropped and logged (the first one freed the kernel's request). A token
/// dropped unanswered answers EIO as it goes and logs that, so that its caller is not left waiting forever.
public final class Reply<Answer: Sendable>: Sendable {
    private let deliver: @Sendable (ReplyOutcome<Answer>) -> Void
    private let arm: (@Sendable (UInt64) -> Void)?
    private let answered = LockedValue(false)

    /// `armInterrupt` is called with the token an interrupt of this request must carry to
    /// `PipeFileSystem.interrupted(token:)`, when the request is parked; it may lead to that call at once
    /// (a request interrupted already), so it must only schedule work.
    public init(armInterrupt: (@Sendable (UInt64) -> Void)? = nil,
                deliver: @escaping @Sendable (ReplyOutcome<Answer>) -> Void) {
        self.deliver = deliver
        self.arm = armInterrupt
    }

    public func send(_ answer: Answer) { finish(.answer(answer)) }
    public func fail(_ code: Int32) { finish(.error(code)) }

    public func finish(_ outcome: ReplyOutcome<Answer>) {
        let first = answered.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return ReplyAudit.answeredTwice() }
        deliver(outcome)
    }

    /// Whether an answer went out.
    public var isAnswered: Bool { answered.withLock { $0 } }

    func armInterrupt(_ token: UInt64) { arm?(token) }

    deinit {
        if answered.withLock({ $0 }) { return }
        ReplyAudit.droppedUnanswered()
        deliver(.error(EIO))
    }
}

extension Reply where Answer == Done {
    public func ok() { send(Done()) }
}

/// The answer of a request that has nothing to say but that it succeeded (unlink, flush, release, ...).
public struct Done: Sendable, Equatable {
    public init() {}
}

/// Counts and logs misuse of reply tokens: each is a bug of the filesystem, which tests check never happens.
public enum ReplyAudit {
    private static let counts = LockedValue<(dropped: Int, twice: Int)>((0, 0))
    private static let logger = Logger(label: "dnpipes.reply")

    /// Tokens dropped without an answer, and answers to tokens answered already, since the process started.
    public static var misuses: (dropped: Int, twice: Int) { counts.withLock { $0 } }

    static func droppedUnanswered() {
        counts.withLock { $0.dropped += 1 }
        logger.error("a request was dropped without an answer; answered EIO")
    }

    static func answeredTwice() {
        counts.withLock { $0.twice += 1 }
        logger.error("a request was answered twice; the second answer was dropped")
    }
}

/// One of the requests a handle's poller waits on: the kernel's poll handle, in the FUSE adapter. Told at
/// most once, and let go of either way.
public protocol PollWaiter: AnyObject, Sendable {
    /// Tells the poller that the handle may be read, and lets go of it.
    func notify()
    /// Lets go of it untold (a newer poll replaced it, or the handle is readable already or closed).
    func discard()
}

/// A name in a directory request, as the bytes the caller gave (a pipe name is checked byte by byte).
public struct EntryName: Sendable, Equatable, ExpressibleByStringLiteral, CustomStringConvertible {
    public let bytes: [UInt8]
    public init(bytes: [UInt8]) { self.bytes = bytes }
    public init(_ text: String) { bytes = Array(text.utf8) }
    public init(stringLiteral text: String) { self.init(text) }
    public var description: String { String(decoding: bytes, as: UTF8.self) }
}
