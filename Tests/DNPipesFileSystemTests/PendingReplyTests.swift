import Dispatch
import XCTest
import DNPipesCore
@testable import DNPipesFileSystem
#if canImport(Glibc)
import Glibc
#endif

/// The reply tokens and the pending replies of requests the store answers later: answered exactly once,
/// whoever comes first of the store's answer and the kernel's interrupt.
final class PendingReplyTests: XCTestCase {
    /// The store's answer and an interrupt, from two threads at once, for many requests at once (half the
    /// interrupts straight to the pending reply, half through the table as the kernel's come).
    func testAnInterruptRacingTheAnswerAnswersOnce() {
        let interrupts = InterruptTable()
        let recorders = (0..<2000).map { _ in ReplyRecorder<Int>() }
        let interruptedCalls = LockedValue(0)
        DispatchQueue.concurrentPerform(iterations: recorders.count) { i in
            let pending = PendingReply(recorders[i].reply(), interrupts: interrupts) { interruptedCalls.withLock { $0 += 1 } }
            let token = recorders[i].interruptToken!
            DispatchQueue.concurrentPerform(iterations: 2) { k in
                if k == 0 {
                    pending.send(i)
                } else if i % 2 == 0 {
                    pending.interrupt(token: token)
                } else {
                    interrupts.interrupted(token)
                }
            }
        }
        let deadline = Date() + 10
        while recorders.contains(where: { $0.count == 0 }) && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        Thread.sleep(forTimeInterval: 0.1)
        var eintr = 0
        for (i, recorder) in recorders.enumerated() {
            XCTAssertEqual(recorder.count, 1, "request \(i)")
            switch recorder.outcomes.first {
            case .answer(let value)?: XCTAssertEqual(value, i)
            case .error(let code)?: XCTAssertEqual(code, EINTR); eintr += 1
            case nil: break
            }
        }
        XCTAssertEqual(interruptedCalls.withLock { $0 }, eintr, "the interrupted hook runs for each EINTR and no other")
    }

    /// An interrupt that comes after the answer (libfuse may send it late) changes nothing.
    func testALateInterruptIsIgnored() {
        let interrupts = InterruptTable()
        let recorder = ReplyRecorder<Int>()
        let pending = PendingReply(recorder.reply(), interrupts: interrupts)
        pending.send(7)
        interrupts.interrupted(recorder.interruptToken!)
        pending.interrupt(token: recorder.interruptToken!)
        XCTAssertFalse(pending.tryAnswer { $0.send(8) })
        Thread.sleep(forTimeInterval: 0.1)
        XCTAssertEqual(recorder.count, 1)
        if case .answer(let value)? = recorder.outcomes.first { XCTAssertEqual(value, 7) } else { XCTFail("answered \(recorder.outcomes)") }
    }

    /// A token answers once: a second answer is dropped and counted; one dropped unanswered answers EIO.
    func testATokenIsAnsweredOnceAndNeverLeftUnanswered() {
        let before = ReplyAudit.misuses
        let twice = ReplyRecorder<Int>()
        do {
            let reply = twice.reply()
            reply.send(1)
            reply.fail(EIO)
            XCTAssertTrue(reply.isAnswered)
        }
        XCTAssertEqual(twice.count, 1)
        XCTAssertEqual(ReplyAudit.misuses.twice, before.twice + 1)

        let dropped = ReplyRecorder<Int>()
        do { _ = dropped.reply() }
        XCTAssertEqual(dropped.error(within: 1), EIO)
        XCTAssertEqual(dropped.count, 1)
        XCTAssertEqual(ReplyAudit.misuses.dropped, before.dropped + 1)
    }
}
