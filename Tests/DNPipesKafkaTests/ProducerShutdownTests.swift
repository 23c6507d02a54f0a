import CRdKafka
import DNPipesCore
import Dispatch
import Foundation
import Logging
import XCTest
@testable import DNPipesKafka

/// The producer's part of shutdown with a real client and no broker (librdkafka queues locally and never
/// hears back): it stops taking messages, waits a bounded time for what is in flight, then answers everyone
/// still waiting with a failure.
final class ProducerShutdownTests: XCTestCase {
    private let configuration = KafkaConfiguration(brokers: "127.0.0.1:1")
    private let logger = Logger(label: "dnpipes.test")

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
