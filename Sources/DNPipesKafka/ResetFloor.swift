import CRdKafka
import DNPipesCore

/// Where a pipe's messages begin after its last reset, kept as the committed offsets (one per partition) of
/// one consumer group.
///
/// Reset markers in the topic tell readers that are streaming the pipe; a host that opens the pipe later
/// would have to read the whole topic to find the last marker before it could serve a single message. The
/// committed offsets let it start at the right place at once: the resetting host commits "one past the
/// marker" of every partition before the reset completes, and an opening host reads them back. The group
/// never has members; it only stores offsets (Kafka's OffsetCommit and OffsetFetch, which every broker has).
extension KafkaStore {
    static let resetGroup = "dnpipes-resets"

    /// Per partition, the first offset after the pipe's last reset, or 0 if it was never reset.
    func resetFloors(of topic: String, partitions: Int) throws -> [Int64] {
        let list = partitionList(topic, offsets: Array(repeating: Int64(RD_KAFKA_OFFSET_INVALID), count: partitions))
        defer { rd_kafka_topic_partition_list_destroy(list) }
        guard let request = rd_kafka_ListConsumerGroupOffsets_new(KafkaStore.resetGroup, list) else {
            throw PipeError.io("topic \(topic): cannot build an offset request")
        }
        defer { rd_kafka_ListConsumerGroupOffsets_destroy(request) }
        var requests: [OpaquePointer?] = [request]
        var floors = Array(repeating: Int64(0), count: partitions)
        let err = try adminRequest(what: "read the reset offsets of \(topic)") { options, queue in
            rd_kafka_ListConsumerGroupOffsets(admin, &requests, 1, options, queue)
        } result: { event in
            partitionResults(rd_kafka_event_ListConsumerGroupOffsets_result(event).map {
                var count = 0
                return rd_kafka_ListConsumerGroupOffsets_result_groups($0, &count).flatMap { count > 0 ? $0[0] : nil }
            } ?? nil) { partition, offset in
                if partition >= 0 && partition < partitions { floors[partition] = max(0, offset) }
            }
        }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw PipeError.unavailable("topic \(topic): cannot read where its last reset left it (group \(KafkaStore.resetGroup)): \(KafkaHandle.describe(err))")
        }
        return floors
    }

    /// Records a reset: readers that open the pipe from now on start at `floors` (one per partition). Never
    /// moves a floor back (two hosts resetting at once commit in either order).
    func commitResetFloors(_ floors: [Int64], of topic: String) throws {
        let current = (try? resetFloors(of: topic, partitions: floors.count)) ?? []
        if current.count == floors.count && zip(current, floors).allSatisfy({ $0 >= $1 }) { return }
        let merged = floors.enumerated().map { max($0.element, $0.offset < current.count ? current[$0.offset] : 0) }
        try commitOffsets(merged, of: topic, group: KafkaStore.resetGroup, what: "the reset")
    }

    /// Commits one offset per partition of `topic` for a group that never has members: how dnpipes keeps
    /// small per-topic facts (reset floors, retentions) with the cluster, with the APIs every broker has.
    func commitOffsets(_ offsets: [Int64], of topic: String, group: String, what: String) throws {
        let list = partitionList(topic, offsets: offsets)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        guard let request = rd_kafka_AlterConsumerGroupOffsets_new(group, list) else {
            throw PipeError.io("topic \(topic): cannot build an offset commit")
        }
        defer { rd_kafka_AlterConsumerGroupOffsets_destroy(request) }
        var requests: [OpaquePointer?] = [request]
        let err = try adminRequest(what: "record \(what) of \(topic)") { options, queue in
            rd_kafka_AlterConsumerGroupOffsets(admin, &requests, 1, options, queue)
        } result: { event in
            partitionResults(rd_kafka_event_AlterConsumerGroupOffsets_result(event).map {
                var count = 0
                return rd_kafka_AlterConsumerGroupOffsets_result_groups($0, &count).flatMap { count > 0 ? $0[0] : nil }
            } ?? nil) { _, _ in }
        }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw PipeError.unavailable("topic \(topic): cannot record \(what) (group \(group)): \(KafkaHandle.describe(err))")
        }
    }
}

/// The first error of a one-group result, handing each partition's offset to `offset`.
func partitionResults(_ group: OpaquePointer?, offset: (Int, Int64) -> Void) -> rd_kafka_resp_err_t {
    guard let group else { return RD_KAFKA_RESP_ERR_UNKNOWN }
    if let error = rd_kafka_group_result_error(group) {
        return rd_kafka_error_code(error)
    }
    guard let partitions = rd_kafka_group_result_partitions(group), partitions.pointee.cnt > 0 else {
        return RD_KAFKA_RESP_ERR_UNKNOWN
    }
    var first = RD_KAFKA_RESP_ERR_NO_ERROR
    for i in 0..<Int(partitions.pointee.cnt) {
        let p = partitions.pointee.elems[i]
        if p.err == RD_KAFKA_RESP_ERR_NO_ERROR { offset(Int(p.partition), p.offset) } else if first == RD_KAFKA_RESP_ERR_NO_ERROR { first = p.err }
    }
    return first
}
