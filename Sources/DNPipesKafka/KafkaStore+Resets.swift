import CRdKafka
import Foundation
import DNPipesCore

/// Resets on Kafka: a marker message per partition (see `KafkaPipe.reset`), the floors it leaves recorded for
/// readers that open the pipe later (ResetFloor.swift), and, where the brokers have it, DeleteRecords to free
/// what lies below.
extension KafkaStore {
    /// Produces a reset marker (an empty message with the `dnpipes-reset` header) to one partition;
    /// `completion` gets its offset once the brokers have it.
    func produceMarker(for pipe: KafkaPipe, partition: Int32, completion: @escaping @Sendable (Result<Int64, Error>) -> Void) {
        let token = deliveries.registerOneOff(OneDelivery { [logger] err, offset in
            if err == RD_KAFKA_RESP_ERR_NO_ERROR {
                completion(.success(offset))
            } else {
                logger.error("pipe \(pipe.name): reset marker for partition \(partition) not acknowledged: \(KafkaHandle.describe(err))")
                completion(.failure(PipeError.unavailable(KafkaHandle.describe(err))))
            }
        })
        let err = producer.produce(topic: pipe.topic, partition: partition, payload: [], token: token, marker: true)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            _ = deliveries.target(token)
            completion(.failure(PipeError.unavailable("pipe \(pipe.name): reset refused: \(KafkaHandle.describe(err))")))
        }
    }

    /// Frees the broker's storage below a reset marker, where the broker supports DeleteRecords.
    func deleteRecords(of pipe: KafkaPipe, below floors: [Int64]) {
        let works = deleteRecordsWorks.withLock { $0 }
        if configuration.deleteRecords == .off || (configuration.deleteRecords == .auto && works == false) { return }
        adminQueue.async { [self] in
            guard isRunning else { return }
            let err = admin.deleteRecords(of: pipe.topic, below: floors, timeout: 10)
            let firstVerdict = deleteRecordsWorks.withLock { works in
                defer { works = err == RD_KAFKA_RESP_ERR_NO_ERROR }
                return works == nil
            }
            if err == RD_KAFKA_RESP_ERR_NO_ERROR {
                if firstVerdict { logger.info("the brokers support DeleteRecords: resets free their storage") }
            } else {
                logger.warning("DeleteRecords on \(pipe.topic) failed (\(KafkaHandle.describe(err))): reset messages stay on the brokers until retention removes them; readers skip them\(configuration.deleteRecords == .auto ? "; not trying again on this mount" : "")")
            }
        }
    }
}
