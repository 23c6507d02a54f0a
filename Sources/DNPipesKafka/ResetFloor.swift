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
        let request = try withTopicPartitionList(partitionEntries(topic, offsets: Array(repeating: Int64(RD_KAFKA_OFFSET_INVALID), count: partitions))) {
            guard let request = rd_kafka_ListConsumerGroupOffsets_new(KafkaStore.resetGroup, $0) else {
                throw PipeError.io("topic \(topic): cannot build an offset request")
            }
            return request
        }
        defer { rd_kafka_ListConsumerGroupOffsets_destroy(request) }
        var requests: [OpaquePointer?] = [request]
        var committed: [(partition: Int, offset: Int64)] = []
        let err = try admin.request(what: "read the reset offsets of \(topic)") { rk, options, queue in
            rd_kafka_ListConsumerGroupOffsets(rk, &requests, 1, options, queue)
        } result: { event in
            partitionResults(rd_kafka_event_ListConsumerGroupOffsets_result(event).map {
                var count = 0
                return rd_kafka_ListConsumerGroupOffsets_result_groups($0, &count).flatMap { count > 0 ? $0[0] : nil }
            } ?? nil) { partition, offset in committed.append((partition, offset)) }
        }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw PipeError.unavailable("topic \(topic): cannot read where its last reset left it (group \(KafkaStore.resetGroup)): \(KafkaHandle.describe(err))")
        }
        return ResetFloor.floors(partitions: partitions, committed: committed)
    }

    /// Records a reset: readers that open the pipe from now on start at `floors` (one per partition). Never
    /// moves a floor back (two hosts resetting at once commit in either order).
    func commitResetFloors(_ floors: [Int64], of topic: String) throws {
        let current = (try? resetFloors(of: topic, partitions: floors.count)) ?? []
        guard let merged = ResetFloor.toCommit(floors, over: current) else { return }
        try commitOffsets(merged, of: topic, group: KafkaStore.resetGroup, what: "the reset")
    }

    /// Commits one offset per partition of `topic` for a group that never has members: how dnpipes keeps
    /// small per-topic facts (reset floors, retentions) with the cluster, with the APIs every broker has.
    func commitOffsets(_ offsets: [Int64], of topic: String, group: String, what: String) throws {
        let request = try withTopicPartitionList(partitionEntries(topic, offsets: offsets)) {
            guard let request = rd_kafka_AlterConsumerGroupOffsets_new(group, $0) else {
                throw PipeError.io("topic \(topic): cannot build an offset commit")
            }
            return request
        }
        defer { rd_kafka_AlterConsumerGroupOffsets_destroy(request) }
        var requests: [OpaquePointer?] = [request]
        let err = try admin.request(what: "record \(what) of \(topic)") { rk, options, queue in
            rd_kafka_AlterConsumerGroupOffsets(rk, &requests, 1, options, queue)
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

/// The arithmetic of reset floors, apart from the requests that read and commit them.
enum ResetFloor {
    /// Per partition 0..<partitions, the committed offset (never below 0), or 0 where none is committed;
    /// offsets of partitions outside that range are ignored.
    static func floors(partitions: Int, committed: [(partition: Int, offset: Int64)]) -> [Int64] {
        var floors = Array(repeating: Int64(0), count: partitions)
        for (partition, offset) in committed where partition >= 0 && partition < partitions {
            floors[partition] = max(0, offset)
        }
        return floors
    }

    /// What a reset to `floors` commits where the cluster has `current` (empty when it could not be read):
    /// nil when every current floor is already at or past the new one, else each partition's higher floor, so
    /// that no floor moves back.
    static func toCommit(_ floors: [Int64], over current: [Int64]) -> [Int64]? {
        if current.count == floors.count && zip(current, floors).allSatisfy({ $0 >= $1 }) { return nil }
        return floors.enumerated().map { max($0.element, $0.offset < current.count ? current[$0.offset] : 0) }
    }
}

/// Collects the markers of one reset, one per partition: the floors once all are in, or the first failure.
final class ResetMarkers: Sendable {
    private let state: LockedValue<(floors: [Int64?], failed: Bool)>

    init(count: Int) { state = LockedValue((Array(repeating: nil, count: count), false)) }

    /// Returns every partition's floor once the last one arrives.
    func add(partition: Int, offset: Int64) -> [Int64]? {
        state.withLock { state in
            state.floors[partition] = offset
            guard !state.failed, state.floors.allSatisfy({ $0 != nil }) else { return nil }
            return state.floors.map { $0! }
        }
    }

    /// Returns true for the first failure only (the reset completes once).
    func fail() -> Bool {
        state.withLock { state in
            defer { state.failed = true }
            return !state.failed
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
