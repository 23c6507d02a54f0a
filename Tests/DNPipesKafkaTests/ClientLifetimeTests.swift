import CRdKafka
import DNPipesCore
import Dispatch
import Foundation
import Logging
import XCTest
@testable import DNPipesKafka

/// The librdkafka clients at shutdown: real clients (librdkafka connects in the background, so no broker is
/// needed to make one, and one that never answers is what a frozen broker looks like). The producer first
/// stops taking messages and waits, bounded, for what is in flight, then answers everyone still waiting
/// with a failure; closed clients' calls must be refused, never reach a destroyed handle.
final class ClientLifetimeTests: XCTestCase {
    /// No broker listens there: the clients are made and closed without one.
    private let configuration = KafkaConfiguration(brokers: "127.0.0.1:1")
    private let logger = Logger(label: "dnpipes.test")

    func testAClosedProducerRefusesPushesAndAnswersEveryoneWaitingForRoom() throws {
        let producer = try PipeProducer(configuration: configuration, logger: logger)
        let (queued, err) = producer.produce(topic: "jobs", messages: MessageBlock([Array("a".utf8)]), token: 1)
        XCTAssertEqual(queued, 1, "queued locally while the brokers are away")
        XCTAssertEqual(err, RD_KAFKA_RESP_ERR_NO_ERROR)
        let called = LockedValue(0)
        producer.whenRoom { called.withLock { $0 += 1 } }
        XCTAssertEqual(called.withLock { $0 }, 0, "waits for the next round of delivery reports")
        producer.close()
        XCTAssertEqual(called.withLock { $0 }, 1, "a waiter is answered at close, so that its retry is refused")
        producer.whenRoom { called.withLock { $0 += 1 } }
        XCTAssertEqual(called.withLock { $0 }, 2, "and from then on at once")
        let after = producer.produce(topic: "jobs", messages: MessageBlock([Array("b".utf8)]), token: 1)
        XCTAssertEqual(after.queued, 0)
        XCTAssertEqual(after.error, RD_KAFKA_RESP_ERR__DESTROY)
        XCTAssertEqual(producer.produce(topic: "jobs", partition: 0, payload: [], token: 2, marker: true), RD_KAFKA_RESP_ERR__DESTROY)
        producer.stopTaking(waitingUpTo: 10)   // no writer has anything in flight: returns at once
        var asked = 0
        producer.run(while: { asked += 1; return asked < 3 })
        XCTAssertEqual(asked, 1, "the thread ends on its first round: there is no client to serve")
    }

    func testAClosedConsumerAnswersNothingAndItsThreadEndsAtOnce() throws {
        let consumer = try StreamConsumer(configuration: configuration, logger: logger)
        XCTAssertNil(consumer.cachedHighWatermark(of: "jobs", partition: 0), "nothing fetched yet")
        consumer.close()
        consumer.wake()   // its wake pipe is closed: nothing is written to a descriptor that may be reused
        XCTAssertNil(consumer.cachedHighWatermark(of: "jobs", partition: 0))
        XCTAssertNil(consumer.learnLeaders(of: "jobs"))
        var asked = 0
        consumer.run(while: { asked += 1; return asked < 3 })
        XCTAssertEqual(asked, 0, "the thread ends before its first round")
    }

    func testAClosedAdminClientRefusesRequestsSayingWhy() throws {
        let admin = try KafkaAdmin(configuration: configuration)
        admin.close()
        XCTAssertThrowsError(try admin.createTopic("jobs", replication: 1)) { error in
            XCTAssertTrue("\(error)".contains("the mount is stopping"), "\(error)")
        }
        XCTAssertEqual(admin.describe("jobs"), .unanswered)
        guard case .failure(let failure) = admin.listTopics(timeout: 1) else { return XCTFail("a listing from a closed client") }
        XCTAssertTrue(failure.description.contains("the mount is stopping"), failure.description)
        XCTAssertEqual(admin.deleteRecords(of: "jobs", below: [3], timeout: 1), RD_KAFKA_RESP_ERR__TIMED_OUT)
    }

    func testAPartitionListHoldsItsEntriesForTheCallOnly() {
        let read = withTopicPartitionList(partitionEntries("jobs", offsets: [5, -1001, 9])) { list in
            (0..<Int(list.pointee.cnt)).map { i in
                let e = list.pointee.elems[i]
                return "\(String(cString: e.topic)):\(e.partition)@\(e.offset)"
            }
        }
        XCTAssertEqual(read, ["jobs:0@5", "jobs:1@-1001", "jobs:2@9"])
    }

    // MARK: The producer's wait at shutdown

    func testWhatTheBrokersNeverAcknowledgedFailsOnceTheWaitIsOver() throws {
        let producer = try PipeProducer(configuration: configuration, logger: logger)
        defer { producer.close() }
        let outcome = LockedValue<[rd_kafka_resp_err_t]>([])
        let token = producer.deliveries.registerOneOff(OneDelivery { err, _ in outcome.withLock { $0.append(err) } })
        XCTAssertEqual(producer.produce(topic: "jobs", partition: 0, payload: [], token: token, marker: true),
                       RD_KAFKA_RESP_ERR_NO_ERROR, "queued locally while the brokers are away")

        let start = Date()
        producer.stopTaking(waitingUpTo: 0.5)
        let waited = Date().timeIntervalSince(start)
        XCTAssertGreaterThanOrEqual(waited, 0.4, "it waited for the delivery report")
        XCTAssertLessThan(waited, 3, "but no longer than the bound")
        XCTAssertEqual(outcome.withLock { $0 }, [RD_KAFKA_RESP_ERR__DESTROY], "answered once, as failed")
        XCTAssertFalse(producer.isTaking)
        XCTAssertEqual(producer.produce(topic: "jobs", partition: 0, payload: [], token: token, marker: true),
                       RD_KAFKA_RESP_ERR__DESTROY, "nothing new is taken")
        producer.deliveries.target(token)?.delivered(DeliveryReport())
        XCTAssertEqual(outcome.withLock { $0 }.count, 1, "a late report is not a second answer")
    }

    func testTheWaitEndsWithTheLastDeliveryReportNotTheBound() throws {
        let producer = try PipeProducer(configuration: configuration, logger: logger)
        defer { producer.close() }
        let outcome = LockedValue<[rd_kafka_resp_err_t]>([])
        let delivery = OneDelivery { err, _ in outcome.withLock { $0.append(err) } }
        _ = producer.deliveries.registerOneOff(delivery)
        // The report arrives during the wait, as the producer's thread would hand it over.
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) {
            var report = DeliveryReport()
            report.add(error: RD_KAFKA_RESP_ERR_NO_ERROR, offset: 4)
            delivery.delivered(report)
        }
        let start = Date()
        producer.stopTaking(waitingUpTo: 20)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "the wait ended with the report")
        XCTAssertEqual(outcome.withLock { $0 }, [RD_KAFKA_RESP_ERR_NO_ERROR], "what was acknowledged stays acknowledged")
    }
}
