import CRdKafka
import Foundation
import DNPipesCore

/// Making and deleting pipes' topics. Both run on the store's topic queue, one after another, never on a FUSE
/// thread: the kernel holds the directory's lock while a mkfifo or an unlink is out, and with the brokers slow
/// or away a wait there would stall every `ls` and every lookup of a new name in the mount.
extension KafkaStore {
    /// Creates a pipe: its name is valid and reserved here at once, and the topic is made on the brokers
    /// in the background, in order with other creations. Writes to the pipe meanwhile wait in the producer's
    /// queue, and a close waits for them to be delivered, as always. If the brokers refuse the topic, the log
    /// says why, the pipe goes away, and its writers' closes fail.
    @discardableResult
    public func create(_ name: PipeName) throws -> Bool {
        if KafkaStore.isInternal(name.value) || KafkaStore.isInternal(topic(for: name)) {
            throw PipeError.invalidName("\(name): names starting with __ are Kafka's internal topics")
        }
        if topic(for: name).utf8.count > PipeName.maxLength {
            throw PipeError.invalidName("topic \(topic(for: name)) (the pipe name with the topic prefix) exceeds Kafka's \(PipeName.maxLength) characters")
        }
        guard catalog.withLock({ $0.names.reserve(name, now: Date()) }) else { return false }
        topicAdmin.async { [self] in makeTopic(of: name) }
        return true
    }

    /// Makes a pipe's topic on the brokers (see `create`). Runs on `topicAdmin`.
    private func makeTopic(of name: PipeName) {
        let topicName = topic(for: name)
        var failure: String?
        do {
            var err = try admin.createTopic(topicName, replication: -1)
            if err == RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR || err == RD_KAFKA_RESP_ERR_INVALID_REQUEST
                || err == RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION {
                // Brokers before KIP-464 need an explicit replication factor.
                err = try admin.createTopic(topicName, replication: 1)
            }
            switch err {
            case RD_KAFKA_RESP_ERR_NO_ERROR:
                logger.info("created pipe \(name) (topic \(topicName))")
                if configuration.defaultRetention != .none && !GroupJournal.isJournal(name) {   // journals keep every entry
                    do { try recordRetention(configuration.defaultRetention, of: name) } catch {
                        logger.error("the pipe keeps every message: its retention was not recorded",
                                     metadata: ["pipe": "\(name)", "retention": "\(configuration.defaultRetention)", "error": "\(error)"])
                    }
                }
            case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS: break   // made elsewhere meanwhile: the pipe is there
            default: failure = KafkaHandle.describe(err)
            }
        } catch {
            failure = "\(error)"
        }
        let refused = catalog.withLock { catalog -> KafkaPipe? in
            catalog.names.made(name, refused: failure != nil, now: Date())
            return failure != nil ? catalog.pipes.removeValue(forKey: name) : nil
        }
        if let failure {
            logger.error("the brokers did not make the pipe's topic; the pipe is gone",
                         metadata: ["pipe": "\(name)", "topic": "\(topicName)", "error": "\(failure)"])
            refused?.markRemoved()
        }
    }

    /// Removes a pipe: it is gone here at once (its readers reach end-of-file, listings leave it out), and
    /// its topic is deleted on the brokers in the background, in order with creations, as `create` makes
    /// topics. If the brokers refuse the deletion, the log says why and the pipe comes back with the next
    /// listing.
    public func remove(_ name: PipeName) throws {
        guard contains(name) else { throw PipeError.noSuchPipe(name) }
        let pipe = catalog.withLock { catalog -> KafkaPipe? in
            catalog.names.remove(name)
            return catalog.pipes.removeValue(forKey: name)
        }
        if let pipe {
            pipe.markRemoved()
            consumer.unassign(pipe)
        }
        topicAdmin.async { [self] in deleteTopic(of: name) }
        logger.info("deleted pipe \(name)")
    }

    /// Deletes a removed pipe's topic (see `remove`). Runs on `topicAdmin`.
    private func deleteTopic(of name: PipeName) {
        let topicName = topic(for: name)
        var failure: String?
        do {
            let err = try admin.deleteTopic(topicName)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART { failure = KafkaHandle.describe(err) }
        } catch {
            failure = "\(error)"
        }
        let current = catalog.withLock { $0.names.deleted(name, failed: failure != nil, now: Date()) }
        if let failure, current {
            logger.error("the brokers did not delete the pipe's topic; it comes back with the next listing",
                         metadata: ["pipe": "\(name)", "topic": "\(topicName)", "error": "\(failure)"])
        }
    }
}
