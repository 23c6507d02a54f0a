import CRdKafka
import Foundation
import DNPipesCore

/// Retention on Kafka. A pipe's retention is kept where every broker can keep it: as the committed offset of
/// the topic's partition 0 in the consumer group `dnpipes-retention` (seconds; none when uncommitted or 0),
/// which, like the reset group, never has members. The topic's retention.ms is set too, where the brokers
/// allow it, so that they free the storage; readers skip expired messages in any case (see
/// PartitionStream+Retention.swift). Each mount reads a pipe's retention when it starts streaming it, and
/// again every ten seconds for the pipes it streams, so a change made on another host reaches it.
extension KafkaStore: RetentionControl {
    static let retentionGroup = "dnpipes-retention"

    public func retention(of name: PipeName) -> Retention {
        retentions.withLock { $0[name] } ?? .none
    }

    public func setRetention(_ retention: Retention, of name: PipeName, completion: @escaping @Sendable (Error?) -> Void) {
        adminQueue.async { [self] in
            guard isRunning else { return completion(PipeError.unavailable("the mount is stopping; the retention was not set")) }
            guard contains(name) else { return completion(PipeError.noSuchPipe(name)) }
            do {
                try recordRetention(retention, of: name)
                completion(nil)
            } catch {
                completion(error)
            }
        }
    }

    /// Records and applies a retention (on the admin queue: it waits on the network).
    func recordRetention(_ retention: Retention, of name: PipeName) throws {
        let topic = configuration.topicPrefix + name.value
        try commitOffsets([retention.seconds ?? 0], of: topic, group: KafkaStore.retentionGroup, what: "the retention")
        remember(retention, of: name)
        retentionCommits.withLock { $0[name] = Date() }
        setTopicRetention(retention, of: topic)
    }

    /// Keeps the retention for lookups and applies it to the pipe's open streams.
    func remember(_ retention: Retention, of name: PipeName) {
        let changed = retentions.withLock { known -> Bool in
            defer { known[name] = retention }
            return known[name] != retention
        }
        if changed, let pipe = openedLog(name) as? KafkaPipe { pipe.applyRetention(retention) }
    }

    /// The retentions recorded for these topics' pipes (one request for them all); pipes with none recorded
    /// get none.
    func readRetentions(of names: [PipeName]) throws -> [PipeName: Retention] {
        guard !names.isEmpty else { return [:] }
        let topics = names.map { configuration.topicPrefix + $0.value }
        let request = try withTopicPartitionList(topics.map { ($0, 0, Int64(RD_KAFKA_OFFSET_INVALID)) }) {
            guard let request = rd_kafka_ListConsumerGroupOffsets_new(KafkaStore.retentionGroup, $0) else {
                throw PipeError.io("cannot build an offset request for the retention of \(names.count) pipes")
            }
            return request
        }
        defer { rd_kafka_ListConsumerGroupOffsets_destroy(request) }
        var requests: [OpaquePointer?] = [request]
        var found: [String: Int64] = [:]
        let err = try admin.request(what: "read the retention of \(names.count) pipes") { rk, options, queue in
            rd_kafka_ListConsumerGroupOffsets(rk, &requests, 1, options, queue)
        } result: { event in
            guard let result = rd_kafka_event_ListConsumerGroupOffsets_result(event) else { return RD_KAFKA_RESP_ERR_UNKNOWN }
            var count = 0
            guard let groups = rd_kafka_ListConsumerGroupOffsets_result_groups(result, &count), count > 0,
                  let partitions = rd_kafka_group_result_partitions(groups[0]) else { return RD_KAFKA_RESP_ERR_UNKNOWN }
            if let error = rd_kafka_group_result_error(groups[0]) { return rd_kafka_error_code(error) }
            for i in 0..<Int(partitions.pointee.cnt) {
                let p = partitions.pointee.elems[i]
                if p.err == RD_KAFKA_RESP_ERR_NO_ERROR, let name = p.topic { found[String(cString: name)] = p.offset }
            }
            return RD_KAFKA_RESP_ERR_NO_ERROR
        }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw PipeError.unavailable("cannot read the retention of pipes (group \(KafkaStore.retentionGroup)): \(KafkaHandle.describe(err))")
        }
        var result: [PipeName: Retention] = [:]
        for (name, topic) in zip(names, topics) {
            let seconds = found[topic] ?? 0
            result[name] = seconds > 0 && seconds <= Retention.maxSeconds ? Retention(seconds: seconds) : .none
        }
        return result
    }

    /// Reads a pipe's retention as its stream starts (on the stream-start queue).
    func loadRetention(of pipe: KafkaPipe) throws {
        let retention = try readRetentions(of: [pipe.name])[pipe.name] ?? .none
        retentions.withLock { $0[pipe.name] = retention }
        pipe.applyRetention(retention)
    }

    /// Reads again, off the metadata thread, the retention of every pipe streamed here (changes made on
    /// other hosts); while the brokers are away, one read at a time waits for them, not one per round.
    func scheduleRetentionRefresh() {
        guard retentionReadPending.withLock({ pending in defer { pending = true }; return !pending }) else { return }
        retentionReads.async { [self] in
            // After shutdown began the clients may be gone (shutdown waits for this queue).
            if isRunning { refreshRetentions(of: streamedPipes) }
            retentionReadPending.withLock { $0 = false }
        }
    }

    /// Brokers delete the offsets of a group without members after offsets.retention.minutes (a week by
    /// default on Apache Kafka): a retention this mount has not committed for a day is committed again.
    func refreshRetentions(of open: [PipeName]) {
        guard let found = try? readRetentions(of: open) else { return }
        let dayAgo = Date().addingTimeInterval(-86400)
        for (name, retention) in found {
            remember(retention, of: name)
            guard retention != .none, retentionCommits.withLock({ $0[name].map { $0 < dayAgo } ?? true }) else { continue }
            do { try recordRetention(retention, of: name) } catch {
                logger.warning("the retention of the pipe was not committed again; it is read as before",
                               metadata: ["pipe": "\(name)", "retention": "\(retention)", "error": "\(error)"])
            }
        }
    }

    /// Asks the brokers to apply the retention themselves (retention.ms; -1 keeps everything). Best effort:
    /// a broker that refuses or ignores it is told once in the log, and readers skip expired messages anyway.
    func setTopicRetention(_ retention: Retention, of topic: String) {
        guard let resource = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic) else { return }
        defer { rd_kafka_ConfigResource_destroy(resource) }
        let value = retention.seconds.map { String($0 * 1000) } ?? "-1"
        if let error = rd_kafka_ConfigResource_add_incremental_config(resource, "retention.ms", RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET, value) {
            rd_kafka_error_destroy(error)
            return
        }
        var resources: [OpaquePointer?] = [resource]
        let err = (try? admin.request(what: "set retention.ms of \(topic)", timeout: 10) { rk, options, queue in
            rd_kafka_IncrementalAlterConfigs(rk, &resources, 1, options, queue)
        } result: { event in
            guard let result = rd_kafka_event_IncrementalAlterConfigs_result(event) else { return RD_KAFKA_RESP_ERR_UNKNOWN }
            var count = 0
            guard let list = rd_kafka_IncrementalAlterConfigs_result_resources(result, &count), count > 0 else {
                return RD_KAFKA_RESP_ERR_UNKNOWN
            }
            return rd_kafka_ConfigResource_error(list[0])
        }) ?? RD_KAFKA_RESP_ERR__TIMED_OUT
        if err != RD_KAFKA_RESP_ERR_NO_ERROR && topicRetentionRefusalLogged.withLock({ was in defer { was = true }; return !was }) {
            logger.notice("the brokers did not take retention.ms; readers skip expired messages, the brokers keep them",
                          metadata: ["topic": "\(topic)", "error": "\(KafkaHandle.describe(err))"])
        }
    }
}
