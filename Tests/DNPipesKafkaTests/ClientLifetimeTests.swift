import CRdKafka
import DNPipesCore
import Logging
import XCTest
@testable import DNPipesKafka

/// The librdkafka clients after they are closed, as at shutdown: real clients (librdkafka connects in the
/// background, so no broker is needed to make one), whose calls must be refused, never reach a destroyed handle.
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
}
