import CRdKafka
import DNPipesCore
import XCTest
@testable import DNPipesKafka

/// A Kafka writer's bookkeeping, fed as librdkafka would answer, without a broker: the backlog a full local
/// queue leaves, the writes parked behind it, and what the flushes report.
final class WriterLedgerTests: XCTestCase {
    /// Messages named m0, m1, ... (so that the backlog's messages can be told apart).
    private func block(_ count: Int) -> MessageBlock { MessageBlock((0..<count).map { Array("m\($0)".utf8) }) }

    private func texts(_ block: MessageBlock?) -> [String] { (block?.messages ?? []).map { String(decoding: $0, as: UTF8.self) } }

    private func report(_ outcomes: [(rd_kafka_resp_err_t, Int64)]) -> DeliveryReport {
        var report = DeliveryReport()
        for (err, offset) in outcomes { report.add(error: err, offset: offset) }
        return report
    }

    func testAPushTheQueueTookInPartLeavesTheRestAsABacklogThatHoldsBackTheNextPush() {
        var ledger = WriterLedger()
        XCTAssertTrue(ledger.take(5))
        XCTAssertTrue(ledger.stopped(block(5), queued: 2, error: RD_KAFKA_RESP_ERR__QUEUE_FULL))
        XCTAssertEqual(texts(ledger.backlog), ["m2", "m3", "m4"])
        XCTAssertEqual(ledger.inFlight, 5, "the backlog is in flight too")
        XCTAssertFalse(ledger.take(1), "refused as full")
        XCTAssertEqual(ledger.inFlight, 5, "a refused push counts nothing")

        let woken = LockedValue(0)
        XCTAssertTrue(ledger.park { woken.withLock { $0 += 1 } })
        var drained = ledger.drained(ledger.backlog!, queued: 1, error: RD_KAFKA_RESP_ERR__QUEUE_FULL)
        XCTAssertTrue(drained.more)
        XCTAssertTrue(drained.unparked.isEmpty, "parked until all of the backlog is queued")
        XCTAssertEqual(texts(ledger.backlog), ["m3", "m4"])

        drained = ledger.drained(ledger.backlog!, queued: 2, error: RD_KAFKA_RESP_ERR_NO_ERROR)
        XCTAssertFalse(drained.more)
        drained.unparked.forEach { $0() }
        XCTAssertEqual(woken.withLock { $0 }, 1)
        XCTAssertNil(ledger.backlog)
        XCTAssertFalse(ledger.park {}, "no backlog: a write waits for the producer's room instead")
        XCTAssertTrue(ledger.take(1))
        XCTAssertEqual(ledger.inFlight, 6)
    }

    func testAPushRefusedOutrightLeavesNoBacklogAndIsNotCounted() {
        var ledger = WriterLedger()
        XCTAssertTrue(ledger.take(4))
        XCTAssertFalse(ledger.stopped(block(4), queued: 0, error: RD_KAFKA_RESP_ERR__QUEUE_FULL))
        XCTAssertNil(ledger.backlog)
        XCTAssertEqual(ledger.inFlight, 0)
        XCTAssertTrue(ledger.take(4))
        XCTAssertFalse(ledger.stopped(block(4), queued: 1, error: RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE))
        XCTAssertEqual(ledger.inFlight, 1, "the one queued is still in flight")
    }

    func testAFlushCompletesWhenEveryMessageIsReportedWithTheFirstFailureOnce() {
        var ledger = WriterLedger()
        XCTAssertTrue(ledger.take(3))
        ledger.flush { _ in }
        XCTAssertNil(ledger.takeCompletions(), "three in flight")
        let first = report([(RD_KAFKA_RESP_ERR_NO_ERROR, 7), (RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, -1)])
        XCTAssertEqual(first.count, 2)
        XCTAssertEqual(first.lastOffset, 7)
        XCTAssertEqual(first.error, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)
        ledger.delivered(first)
        XCTAssertNil(ledger.takeCompletions(), "one still in flight")
        ledger.delivered(report([(RD_KAFKA_RESP_ERR__TRANSPORT, -1)]))
        let done = ledger.takeCompletions()
        XCTAssertEqual(done?.flushes.count, 1)
        XCTAssertEqual(done?.failure, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, "the first failure")
        XCTAssertNil(ledger.takeCompletions(), "taken")

        ledger.flush { _ in }
        ledger.flush { _ in }
        let next = ledger.takeCompletions()
        XCTAssertEqual(next?.flushes.count, 2, "nothing in flight: both complete at once")
        XCTAssertNil(next?.failure, "a failure is reported once")
    }

    func testABacklogThatFailsIsNoLongerInFlightAndItsFailureReachesTheFlush() {
        var ledger = WriterLedger()
        XCTAssertTrue(ledger.take(3))
        XCTAssertTrue(ledger.stopped(block(3), queued: 1, error: RD_KAFKA_RESP_ERR__QUEUE_FULL))
        let parked = LockedValue(false)
        XCTAssertTrue(ledger.park { parked.withLock { $0 = true } })
        let drained = ledger.drained(ledger.backlog!, queued: 0, error: RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
        XCTAssertFalse(drained.more)
        XCTAssertEqual(drained.unparked.count, 1, "a failed backlog lets the parked write try (and fail) at once")
        XCTAssertEqual(ledger.inFlight, 1)
        ledger.flush { _ in }
        ledger.delivered(report([(RD_KAFKA_RESP_ERR_NO_ERROR, 0)]))
        XCTAssertEqual(ledger.takeCompletions()?.failure, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
    }

    // MARK: Shutdown

    /// What a flush asked for now gets: nil while it waits, else the failure it reports (nil inside: success).
    private func flushNow(_ ledger: inout WriterLedger) -> rd_kafka_resp_err_t?? {
        ledger.flush { _ in }
        return ledger.takeCompletions().map(\.failure)
    }

    func testShutdownFailsWhatIsStillInFlightAndAnswersEveryoneWaiting() {
        var ledger = WriterLedger()
        XCTAssertTrue(ledger.take(5))
        XCTAssertTrue(ledger.stopped(block(5), queued: 3, error: RD_KAFKA_RESP_ERR__QUEUE_FULL))
        XCTAssertTrue(ledger.park {}, "a write waits behind the backlog")
        let answers = LockedValue<[String]>([])
        ledger.flush { error in answers.withLock { $0.append("flush \(error == nil ? "ok" : "failed")") } }
        XCTAssertTrue(ledger.whenSettled {}, "five in flight")
        ledger.delivered(report([(RD_KAFKA_RESP_ERR_NO_ERROR, 0), (RD_KAFKA_RESP_ERR_NO_ERROR, 1)]))
        XCTAssertTrue(ledger.takeSettled().isEmpty, "three still in flight, the backlog's two among them")

        let closing = ledger.close(reason: RD_KAFKA_RESP_ERR__DESTROY)
        XCTAssertEqual(closing.unacknowledged, 3)
        XCTAssertEqual(closing.flushes.count, 1, "the waiting flush is answered")
        XCTAssertEqual(closing.failure, RD_KAFKA_RESP_ERR__DESTROY)
        XCTAssertEqual(closing.waiters.count, 2, "the shutdown's wait and the parked write are let go")
        XCTAssertTrue(ledger.isClosed)
        XCTAssertNil(ledger.backlog, "a backlog that never went out is part of what failed")
        XCTAssertEqual(ledger.inFlight, 0)

        ledger.delivered(report([(RD_KAFKA_RESP_ERR_NO_ERROR, 2)]))
        XCTAssertEqual(ledger.inFlight, 0, "a late report changes nothing")
        XCTAssertFalse(ledger.stopped(block(1), queued: 0, error: RD_KAFKA_RESP_ERR__DESTROY))
        XCTAssertEqual(ledger.inFlight, 0, "a push refused after the close counts nothing")
        XCTAssertEqual(flushNow(&ledger), .some(RD_KAFKA_RESP_ERR__DESTROY),
                       "a handle closed later fails too: some of its messages were not acknowledged")
        let again = ledger.close(reason: RD_KAFKA_RESP_ERR__DESTROY)
        XCTAssertEqual(again.unacknowledged, 0, "closed once")
        XCTAssertTrue(again.flushes.isEmpty && again.waiters.isEmpty)
    }

    func testShutdownOfAWriterWhoseMessagesWereAllAcknowledgedFailsNothing() {
        var ledger = WriterLedger()
        XCTAssertTrue(ledger.take(2))
        let settled = LockedValue(false)
        XCTAssertTrue(ledger.whenSettled { settled.withLock { $0 = true } })
        ledger.delivered(report([(RD_KAFKA_RESP_ERR_NO_ERROR, 0), (RD_KAFKA_RESP_ERR_NO_ERROR, 1)]))
        ledger.takeSettled().forEach { $0() }
        XCTAssertTrue(settled.withLock { $0 }, "the shutdown's wait ends with the last report")
        XCTAssertFalse(ledger.whenSettled {}, "nothing in flight: answered at once")

        let closing = ledger.close(reason: RD_KAFKA_RESP_ERR__DESTROY)
        XCTAssertEqual(closing.unacknowledged, 0)
        XCTAssertNil(closing.failure)
        XCTAssertEqual(flushNow(&ledger), .some(nil),
                       "a close after shutdown is answered at once, and succeeds: every message was acknowledged")
    }

    func testAFailureNotYetReportedStillReachesAFlushAfterShutdown() {
        var ledger = WriterLedger()
        XCTAssertTrue(ledger.take(1))
        ledger.delivered(report([(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, -1)]))
        let closing = ledger.close(reason: RD_KAFKA_RESP_ERR__DESTROY)
        XCTAssertEqual(closing.unacknowledged, 0)
        XCTAssertEqual(closing.failure, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)
        XCTAssertEqual(flushNow(&ledger), .some(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT))
    }
}
