import CRdKafka
import DNPipesCore

/// Where a pipe's messages begin after its last reset, kept as the committed offset of one consumer group.
///
/// Reset markers in the topic tell readers that are streaming the pipe; a host that opens the pipe later
/// would have to read the whole topic to find the last marker before it could serve a single message. The
/// committed offset lets it start at the right place at once: the resetting host commits "one past the
/// marker" before the reset completes, and an opening host reads it back. The group never has members; it
/// only stores offsets (Kafka's OffsetCommit and OffsetFetch, which every broker has).
extension KafkaStore {
    static let resetGroup = "dnpipes-resets"

    /// The first offset after the pipe's last reset, or 0 if it was never reset.
    func resetFloor(of topic: String) throws -> Int64 {
        let list = partitionList(topic, offset: Int64(RD_KAFKA_OFFSET_INVALID))
        defer { rd_kafka_topic_partition_list_destroy(list) }
        guard let request = rd_kafka_ListConsumerGroupOffsets_new(KafkaStore.resetGroup, list) else {
            throw PipeError.io("topic \(topic): cannot build an offset request")
        }
        defer { rd_kafka_ListConsumerGroupOffsets_destroy(request) }
        var requests: [OpaquePointer?] = [request]
        var floor: Int64 = 0
        let err = try adminRequest(what: "read the reset offset of \(topic)") { options, queue in
            rd_kafka_ListConsumerGroupOffsets(admin, &requests, 1, options, queue)
        } result: { event in
            partitionResult(rd_kafka_event_ListConsumerGroupOffsets_result(event).map {
                var count = 0
                return rd_kafka_ListConsumerGroupOffsets_result_groups($0, &count).flatMap { count > 0 ? $0[0] : nil }
            } ?? nil) { offset in floor = max(0, offset) }
        }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw PipeError.unavailable("topic \(topic): cannot read where its last reset left it (group \(KafkaStore.resetGroup)): \(KafkaHandle.describe(err))")
        }
        return floor
    }

    /// Records a reset: readers that open the pipe from now on start at `offset`. Never moves the floor
    /// back (two hosts resetting at once commit in either order).
    func commitResetFloor(_ offset: Int64, of topic: String) throws {
        if let current = try? resetFloor(of: topic), current >= offset { return }
        let list = partitionList(topic, offset: offset)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        guard let request = rd_kafka_AlterConsumerGroupOffsets_new(KafkaStore.resetGroup, list) else {
            throw PipeError.io("topic \(topic): cannot build an offset commit")
        }
        defer { rd_kafka_AlterConsumerGroupOffsets_destroy(request) }
        var requests: [OpaquePointer?] = [request]
        let err = try adminRequest(what: "record the reset of \(topic)") { options, queue in
            rd_kafka_AlterConsumerGroupOffsets(admin, &requests, 1, options, queue)
        } result: { event in
            partitionResult(rd_kafka_event_AlterConsumerGroupOffsets_result(event).map {
                var count = 0
                return rd_kafka_AlterConsumerGroupOffsets_result_groups($0, &count).flatMap { count > 0 ? $0[0] : nil }
            } ?? nil) { _ in }
        }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw PipeError.unavailable("topic \(topic): cannot record the reset (group \(KafkaStore.resetGroup)): \(KafkaHandle.describe(err))")
        }
    }
}

/// The error of a one-group, one-partition result, handing its offset to `offset`.
private func partitionResult(_ group: OpaquePointer?, offset: (Int64) -> Void) -> rd_kafka_resp_err_t {
    guard let group else { return RD_KAFKA_RESP_ERR_UNKNOWN }
    if let error = rd_kafka_group_result_error(group) {
        return rd_kafka_error_code(error)
    }
    guard let partitions = rd_kafka_group_result_partitions(group), partitions.pointee.cnt > 0 else {
        return RD_KAFKA_RESP_ERR_UNKNOWN
    }
    let p = partitions.pointee.elems[0]
    if p.err == RD_KAFKA_RESP_ERR_NO_ERROR { offset(p.offset) }
    return p.err
}
