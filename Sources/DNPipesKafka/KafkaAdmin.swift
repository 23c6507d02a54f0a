import CRdKafka
import Foundation
import DNPipesCore

/// The mount's admin client: the cluster's topics (metadata), making and deleting topics, and the admin
/// requests of resets and retention (offsets of member-less groups, DeleteRecords, topic configs).
///
/// Every call here waits on the network, none on a FUSE thread: a lookup of a name the store does not know
/// yet waits for a second at most on the filesystem's work queue, parked meanwhile (see `KafkaStore.lookUp`);
/// topics are made and deleted on the store's topic queue, and the rest runs on its other queues and its
/// metadata thread.
final class KafkaAdmin: Sendable {
    /// Nil once closed (see `close`).
    private let client: LockedValue<KafkaClient?>
    private let brokers: String

    init(configuration: KafkaConfiguration) throws {
        brokers = configuration.brokers
        // Looking up a name must never create a topic of that name, whatever the brokers' auto-creation says.
        client = LockedValue(try KafkaHandle.make(RD_KAFKA_PRODUCER, defaults: [("client.id", "dnpipes-admin"), ("allow.auto.create.topics", "false")],
                                                  configuration: configuration))
    }

    /// Lets go of the client (at shutdown, once the queues that use it have run out): it is destroyed here,
    /// or by the last request still out. Requests from now on fail.
    func close() {
        let last = client.withLock { client in defer { client = nil }; return client }
        withExtendedLifetime(last) {}
    }

    private var current: KafkaClient? { client.withLock { $0 } }

    /// Runs one admin request and waits for its result event. `send` gets the client's handle, the request's
    /// options and the queue its result comes to.
    func request(what: String, timeout: Double = 15,
                 send: (OpaquePointer, OpaquePointer?, OpaquePointer?) -> Void,
                 result: (OpaquePointer?) -> rd_kafka_resp_err_t) throws -> rd_kafka_resp_err_t {
        guard let client = current else { throw PipeError.unavailable("\(what): the mount is stopping") }
        let queue = rd_kafka_queue_new(client.handle)
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(client.handle, RD_KAFKA_ADMIN_OP_ANY)
        defer { rd_kafka_AdminOptions_destroy(options) }
        var errstr = [CChar](repeating: 0, count: 256)
        rd_kafka_AdminOptions_set_request_timeout(options, Int32(timeout * 1000), &errstr, errstr.count)
        send(client.handle, options, queue)
        guard let event = rd_kafka_queue_poll(queue, Int32(timeout * 1000) + 1000) else {
            throw PipeError.unavailable("\(what): no answer from the Kafka brokers \(brokers)")
        }
        defer { rd_kafka_event_destroy(event) }
        let err = rd_kafka_event_error(event)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { return err }
        return result(event)
    }

    // MARK: Metadata

    /// Every topic of the cluster the brokers list without an error, with its partition count.
    func listTopics(timeout: Double) -> Result<[String: Int], KafkaHandle.Failure> {
        guard let client = current else { return .failure(KafkaHandle.Failure(description: "the mount is stopping")) }
        var md: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(client.handle, 1, nil, &md, Int32(timeout * 1000))
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let md else { return .failure(KafkaHandle.Failure(description: KafkaHandle.describe(err))) }
        defer { rd_kafka_metadata_destroy(md) }
        var topics: [String: Int] = [:]
        for i in 0..<Int(md.pointee.topic_cnt) {
            let t = md.pointee.topics[i]
            if t.err == RD_KAFKA_RESP_ERR_NO_ERROR { topics[String(cString: t.topic)] = Int(t.partition_cnt) }
        }
        return .success(topics)
    }

    /// What the brokers say of one topic.
    enum TopicAnswer: Equatable {
        case exists(partitions: Int)
        case absent
        case unanswered
    }

    /// Asks the brokers about one topic, waiting at most a second.
    func describe(_ topic: String) -> TopicAnswer {
        guard let client = current, let handle = rd_kafka_topic_new(client.handle, topic, nil) else { return .unanswered }
        defer { rd_kafka_topic_destroy(handle) }
        var md: UnsafePointer<rd_kafka_metadata>?
        guard rd_kafka_metadata(client.handle, 0, handle, &md, 1000) == RD_KAFKA_RESP_ERR_NO_ERROR, let md else { return .unanswered }
        defer { rd_kafka_metadata_destroy(md) }
        guard md.pointee.topic_cnt > 0 else { return .unanswered }
        let t = md.pointee.topics[0]
        if t.err == RD_KAFKA_RESP_ERR_NO_ERROR { return .exists(partitions: Int(t.partition_cnt)) }
        return t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_ID ? .absent : .unanswered
    }

    // MARK: Topics

    /// Makes a topic of one partition; returns the brokers' answer for it.
    func createTopic(_ topic: String, replication: Int32) throws -> rd_kafka_resp_err_t {
        var errstr = [CChar](repeating: 0, count: 512)
        guard let newTopic = rd_kafka_NewTopic_new(topic, 1, replication, &errstr, errstr.count) else {
            throw PipeError.io("topic \(topic): \(text(of: errstr))")
        }
        defer { rd_kafka_NewTopic_destroy(newTopic) }
        return try topicRequest(what: "create topic \(topic)", newTopic, send: rd_kafka_CreateTopics) {
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result($0), $1)
        }
    }

    /// Deletes a topic; returns the brokers' answer for it.
    func deleteTopic(_ topic: String) throws -> rd_kafka_resp_err_t {
        guard let deleteTopic = rd_kafka_DeleteTopic_new(topic) else { throw PipeError.io("topic \(topic)") }
        defer { rd_kafka_DeleteTopic_destroy(deleteTopic) }
        return try topicRequest(what: "delete topic \(topic)", deleteTopic, send: rd_kafka_DeleteTopics) {
            rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result($0), $1)
        }
    }

    /// Sends one topic's request (`send`, as CreateTopics and DeleteTopics take it) and returns the error of
    /// the first topic result, which `results` finds in the result event with their count.
    private func topicRequest(what: String, _ item: OpaquePointer,
                              send: (OpaquePointer?, UnsafeMutablePointer<OpaquePointer?>?, Int, OpaquePointer?, OpaquePointer?) -> Void,
                              results: (OpaquePointer?, UnsafeMutablePointer<Int>) -> UnsafeMutablePointer<OpaquePointer?>?) throws -> rd_kafka_resp_err_t {
        var items: [OpaquePointer?] = [item]
        return try request(what: what) { rk, options, queue in
            send(rk, &items, 1, options, queue)
        } result: { event in
            var count = 0
            guard let list = results(event, &count), count > 0 else { return RD_KAFKA_RESP_ERR_UNKNOWN }
            return rd_kafka_topic_result_error(list[0])
        }
    }

    /// Frees a topic's storage below these offsets (one per partition, from 0); returns the first
    /// partition's error, or a timeout when the brokers did not answer.
    func deleteRecords(of topic: String, below offsets: [Int64], timeout: Double) -> rd_kafka_resp_err_t {
        withTopicPartitionList(partitionEntries(topic, offsets: offsets)) { list in
            guard let request = rd_kafka_DeleteRecords_new(list) else { return RD_KAFKA_RESP_ERR_UNKNOWN }
            defer { rd_kafka_DeleteRecords_destroy(request) }
            var requests: [OpaquePointer?] = [request]
            return (try? self.request(what: "delete records of \(topic)", timeout: timeout) { rk, options, queue in
                rd_kafka_DeleteRecords(rk, &requests, 1, options, queue)
            } result: { event in
                let result = rd_kafka_event_DeleteRecords_result(event)
                guard let offsets = rd_kafka_DeleteRecords_result_offsets(result), offsets.pointee.cnt > 0 else {
                    return RD_KAFKA_RESP_ERR_UNKNOWN
                }
                let errors = (0..<Int(offsets.pointee.cnt)).map { offsets.pointee.elems[$0].err }
                return errors.first { $0 != RD_KAFKA_RESP_ERR_NO_ERROR } ?? RD_KAFKA_RESP_ERR_NO_ERROR
            }) ?? RD_KAFKA_RESP_ERR__TIMED_OUT
        }
    }
}
