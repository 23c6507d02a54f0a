import CRdKafka
import Foundation
import Logging
import DNPipesCore

/// The mount's one consumer client: it fetches every streamed partition of every open pipe and hands the
/// records to their `PartitionStream`s, on one thread that sleeps on librdkafka's queue events.
///
/// Partitions are assigned directly (never through a consumer group), each at the offset its stream starts
/// at, and each gets a queue of its own that is served only while its stream's window has room. A partition
/// whose stream holds (see `PartitionStream.holding`) is unassigned, and assigned again where it left off.
// @unchecked Sendable: `toAssign` and `toUnassign` are guarded by `lock`; `assigned`, `held` and the
// consumer's queues are touched by the consumer thread only.
final class StreamConsumer: @unchecked Sendable {
    private struct TopicPartition: Hashable {
        var topic: String
        var partition: Int32
    }
    /// What the consumer thread knows of an assigned partition.
    private struct Assigned {
        var pipe: KafkaPipe
        var stream: PartitionStream
        var queue: OpaquePointer
        /// The stream's window is full: its queue is left alone until a reader makes room.
        var full = false
    }

    /// Nil once closed (see `close`).
    private let client: LockedValue<ConsumerClient?>
    private let logger: Logger

    private let lock = NSLock()
    private var toAssign: [(pipe: KafkaPipe, streams: [PartitionStream])] = []
    private var toUnassign: [KafkaPipe] = []
    /// Touched by the consumer thread only.
    private var assigned: [TopicPartition: Assigned] = [:]
    /// Partitions let go while their counting streams hold (see `PartitionStream.count(upTo:)`); taken again
    /// when their streams ask. Touched by the consumer thread only.
    private var held: [TopicPartition: (pipe: KafkaPipe, stream: PartitionStream)] = [:]

    init(configuration: KafkaConfiguration, logger: Logger) throws {
        self.logger = logger
        let messageMax = String(max(configuration.maxMessageBytes + 1024, 1_000_000))
        let consumer = try KafkaHandle.make(RD_KAFKA_CONSUMER, defaults: [
            // Partitions are assigned directly, never through a group: the id only satisfies librdkafka.
            ("group.id", "dnpipes-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"),
            ("enable.auto.commit", "false"), ("enable.partition.eof", "true"), ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "100"),
            // The consumer thread empties the local queues into the streams at once; when it has not (a window
            // is full), a fetch waits 10 ms rather than librdkafka's default second before trying again.
            ("queued.max.messages.kbytes", "8192"), ("fetch.queue.backoff.ms", "10"),
            ("fetch.message.max.bytes", messageMax), ("client.id", "dnpipes-consumer"),
            ("allow.auto.create.topics", "false"),
        ], configuration: configuration)
        client = LockedValue(try ConsumerClient(consumer))
    }

    /// Asks for a pipe's streams to be fetched (applied by the consumer thread).
    func assign(_ pipe: KafkaPipe, streams: [PartitionStream]) {
        guard !streams.isEmpty else { return }
        lock.lock()
        toAssign.append((pipe, streams))
        lock.unlock()
        wake()
    }

    /// Stops fetching a deleted pipe.
    func unassign(_ pipe: KafkaPipe) {
        lock.lock()
        toUnassign.append(pipe)
        lock.unlock()
        wake()
    }

    func wake() {
        // Holding the client keeps its wake pipe open (a closed descriptor's number may be reused).
        guard let client = current else { return }
        var byte: UInt8 = 1
        _ = write(client.wakePipe.write, &byte, 1)   // a full pipe already means "wake up"
    }

    private var current: ConsumerClient? { client.withLock { $0 } }

    /// Fetches the topic's metadata into the consumer, so that its first fetch goes to each partition's leader
    /// at once (a partition assigned before the consumer knows its leader waits for a retry timer, about a
    /// second). Returns the topic's partition count, or nil when the brokers did not tell.
    func learnLeaders(of topic: String) -> Int? {
        guard let client = current, let handle = rd_kafka_topic_new(client.client.handle, topic, nil) else { return nil }
        let consumer = client.client.handle
        defer { rd_kafka_topic_destroy(handle) }
        var md: UnsafePointer<rd_kafka_metadata>?
        guard rd_kafka_metadata(consumer, 0, handle, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR, let md else { return nil }
        defer { rd_kafka_metadata_destroy(md) }
        guard md.pointee.topic_cnt > 0, md.pointee.topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
        return Int(md.pointee.topics[0].partition_cnt)
    }

    /// The high watermark of the latest fetch response for a partition.
    func cachedHighWatermark(of topic: String, partition: Int32) -> Int64? {
        guard let client = current else { return nil }
        var low: Int64 = -1, high: Int64 = -1
        let err = rd_kafka_get_watermark_offsets(client.client.handle, topic, partition, &low, &high)
        return err == RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 ? high : nil
    }

    /// Runs the consumer thread until `isRunning` says stop. The partitions' queues are destroyed as it ends,
    /// before the client can be.
    func run(while isRunning: () -> Bool) {
        guard let client = current else { return }
        var batch = [UnsafeMutablePointer<rd_kafka_message_t>?](repeating: nil, count: 1024)
        while isRunning() {
            applyRequests(client)
            var served = 0
            // The consumer's own queue carries errors; each partition's queue its messages.
            served += consume(from: client.queue, of: client.client.handle, into: &batch)
            for entry in assigned.values where !entry.full {
                served += consume(from: entry.queue, of: client.client.handle, into: &batch)
            }
            if served == 0 { client.waitForWork(timeout: 200) }
        }
        for entry in assigned.values { rd_kafka_queue_destroy(entry.queue) }
        assigned = [:]
    }

    /// Lets go of the client (at shutdown, once the consumer thread has stopped): it closes and is destroyed
    /// here, or by the last call still using it.
    func close() {
        let last = client.withLock { client in defer { client = nil }; return client }
        withExtendedLifetime(last) {}
    }

    private func applyRequests(_ client: ConsumerClient) {
        let consumer = client.client.handle
        lock.lock()
        let assign = toAssign
        toAssign = []
        let unassign = toUnassign
        toUnassign = []
        lock.unlock()
        for pipe in unassign {
            // Only this pipe's: a pipe of the same name made again since may already be assigned.
            held = held.filter { !($0.key.topic == pipe.topic && $0.value.pipe === pipe) }
            stopFetching(assigned.filter { $0.key.topic == pipe.topic && $0.value.pipe === pipe }.map(\.key), consumer)
        }
        for (pipe, streams) in assign where !pipe.isRemoved {
            startFetching(pipe, streams.map { ($0, $0.streamStart) }, client)
        }
        for (key, entry) in held {
            if entry.pipe.isRemoved { held[key] = nil; continue }
            let (rewind, resume) = entry.stream.takeRequests()
            guard rewind != nil || resume else { continue }
            held[key] = nil
            startFetching(entry.pipe, [(entry.stream, rewind ?? entry.stream.nextOffset)], client)
            if let rewind {
                entry.stream.rewound(to: rewind)
                entry.pipe.notifyReaders()
            }
        }
        for (key, entry) in assigned {
            let (rewind, resume) = entry.stream.takeRequests()
            if let rewind {
                withTopicPartitionList([(key.topic, key.partition, rewind)]) { list in
                    if let error = rd_kafka_seek_partitions(consumer, list, 5000) {
                        logger.warning("pipe \(entry.pipe.name): seek of partition \(key.partition) to \(rewind) failed: \(String(cString: rd_kafka_error_string(error)))")
                        rd_kafka_error_destroy(error)
                    }
                }
                entry.stream.rewound(to: rewind)
                entry.pipe.notifyReaders()
            }
            if entry.full && (resume || rewind != nil) { assigned[key]?.full = false }
        }
    }

    /// Assigns partitions of `pipe`, each at its offset, and gives each a queue of its own.
    private func startFetching(_ pipe: KafkaPipe, _ streams: [(PartitionStream, Int64)], _ client: ConsumerClient) {
        let consumer = client.client.handle
        // An explicit offset needs no offset query before the first fetch. Below the low watermark
        // (retention, DeleteRecords), auto.offset.reset=earliest starts at the oldest message.
        withTopicPartitionList(streams.map { (pipe.topic, $0.0.partition, $0.1) }) { list in
            if let error = rd_kafka_incremental_assign(consumer, list) {
                logger.error("pipe \(pipe.name): cannot read topic \(pipe.topic): \(String(cString: rd_kafka_error_string(error)))")
                rd_kafka_error_destroy(error)
            }
        }
        // A full window holds back just its partition: librdkafka stops fetching it once its queue holds
        // queued.max.messages.kbytes, and goes on 10 ms after the queue is served again (pausing the
        // partition instead would throw the prefetched messages away and cost a second to resume).
        for (stream, _) in streams {
            let key = TopicPartition(topic: pipe.topic, partition: stream.partition)
            guard assigned[key] == nil, let queue = rd_kafka_queue_get_partition(consumer, pipe.topic, stream.partition) else { continue }
            rd_kafka_queue_forward(queue, nil)
            rd_kafka_queue_io_event_enable(queue, client.wakePipe.write, "1", 1)
            assigned[key] = Assigned(pipe: pipe, stream: stream, queue: queue)
        }
    }

    /// Unassigns partitions and destroys their queues (with whatever librdkafka had prefetched into them).
    private func stopFetching(_ keys: [TopicPartition], _ consumer: OpaquePointer) {
        guard !keys.isEmpty else { return }
        for key in keys { rd_kafka_queue_destroy(assigned.removeValue(forKey: key)!.queue) }
        withTopicPartitionList(keys.map { ($0.topic, $0.partition, Int64(RD_KAFKA_OFFSET_INVALID)) }) { list in
            if let error = rd_kafka_incremental_unassign(consumer, list) { rd_kafka_error_destroy(error) }
        }
    }

    /// Takes one batch from a queue and hands its records to their streams. Returns how many it took.
    private func consume(from queue: OpaquePointer, of consumer: OpaquePointer, into batch: inout [UnsafeMutablePointer<rd_kafka_message_t>?]) -> Int {
        let n = rd_kafka_consume_batch_queue(queue, 0, &batch, batch.count)
        guard n > 0 else { return 0 }
        // Per partition: offsets, payloads copied once into one block, and which of them are reset markers.
        var records: [TopicPartition: ConsumedRecords] = [:]
        var ends: [TopicPartition: Int64] = [:]
        var holds: [TopicPartition] = []
        // A batch holds runs of one partition's messages (a partition's own queue holds nothing else): the
        // topic is named, and the partition's records looked up, once per run, not per message.
        var run: (topic: OpaquePointer?, partition: Int32, key: TopicPartition, records: ConsumedRecords)?
        for i in 0..<n {
            guard let m = batch[i] else { continue }
            let msg = m.pointee
            if run == nil || msg.rkt != run!.topic || msg.partition != run!.partition {
                if let done = run, !done.records.offsets.isEmpty { records[done.key] = done.records }
                let key = TopicPartition(topic: String(cString: dnp_message_topic(m)), partition: msg.partition)
                run = (msg.rkt, msg.partition, key, records.removeValue(forKey: key) ?? ConsumedRecords())
            }
            if msg.err == RD_KAFKA_RESP_ERR__PARTITION_EOF {
                ends[run!.key] = msg.offset
            } else if msg.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                logger.warning("reading topic \(run!.key.topic) partition \(msg.partition): \(KafkaHandle.describe(msg.err))")
            } else {
                // A reset marker is an empty message: only those need their headers parsed.
                let isMarker = msg.len == 0 && dnp_has_header(m, KafkaStore.markerHeader) != 0
                run!.records.add(offset: msg.offset, isMarker: isMarker,
                                 payload: UnsafeRawBufferPointer(start: msg.payload, count: msg.payload == nil ? 0 : msg.len),
                                 timestamp: rd_kafka_message_timestamp(m, nil))
            }
            rd_kafka_message_destroy(m)
        }
        if let done = run, !done.records.offsets.isEmpty { records[done.key] = done.records }
        for (key, recs) in records {
            KafkaMetrics.messagesFetched(recs.offsets.count)
            guard let entry = assigned[key] else { continue }
            let (changed, full, hold) = entry.stream.deliver(offsets: recs.offsets, block: recs.block, markers: recs.markers,
                                                             newestTimestamp: recs.newestTimestamp, timestamps: recs.timestamps)
            if full { assigned[key]?.full = true }
            if hold { holds.append(key) }
            var first = false
            if !entry.stream.isCaughtUp {
                // The fetch response that brought these records also brought the partition's end.
                var low: Int64 = 0, high: Int64 = -1
                rd_kafka_get_watermark_offsets(consumer, key.topic, key.partition, &low, &high)
                if high >= 0 { first = entry.stream.learnedEnd(high: high, low: max(0, low)) }
            }
            if changed || first { entry.pipe.notifyReaders() }
        }
        for (key, offset) in ends {
            guard let entry = assigned[key] else { continue }
            var low: Int64 = 0, high: Int64 = 0
            rd_kafka_get_watermark_offsets(consumer, key.topic, key.partition, &low, &high)
            let (first, hold) = entry.stream.reachedEnd(at: offset, low: max(0, low))
            if first { entry.pipe.notifyReaders() }
            if hold { holds.append(key) }
        }
        for key in holds {
            guard let entry = assigned[key] else { continue }
            stopFetching([key], consumer)
            held[key] = (entry.pipe, entry.stream)
        }
        return n
    }
}

/// The consumer client with its own queue and the pipe that wakes its thread. Its deinit closes the consumer
/// and lets go of the client (the partitions' queues are gone by then: the consumer thread destroys them).
// @unchecked Sendable: every property is set in init; librdkafka's calls are thread-safe.
private final class ConsumerClient: @unchecked Sendable {
    let client: KafkaClient
    let queue: OpaquePointer
    /// librdkafka writes to this pipe when a queue gets messages, and `StreamConsumer.wake` when the thread has
    /// requests to apply: the thread sleeps in poll() on it, never on a timer.
    let wakePipe: (read: Int32, write: Int32)

    init(_ client: KafkaClient) throws {
        rd_kafka_poll_set_consumer(client.handle)
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw PipeError.io("pipe: \(String(cString: strerror(errno)))") }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        self.client = client
        queue = rd_kafka_queue_get_consumer(client.handle)
        wakePipe = (fds[0], fds[1])
        rd_kafka_queue_io_event_enable(queue, wakePipe.write, "1", 1)
    }

    /// Sleeps until a queue has messages, a request arrives, or `timeout` ms pass.
    func waitForWork(timeout: Int32) {
        var pfd = pollfd(fd: wakePipe.read, events: Int16(POLLIN), revents: 0)
        _ = poll(&pfd, 1, timeout)
        var drain = [UInt8](repeating: 0, count: 256)
        while read(wakePipe.read, &drain, drain.count) > 0 {}
    }

    deinit {
        rd_kafka_queue_io_event_enable(queue, -1, nil, 0)
        rd_kafka_queue_destroy(queue)
        Glibc.close(wakePipe.read)
        Glibc.close(wakePipe.write)
        rd_kafka_consumer_close(client.handle)
    }
}

/// What one consumed batch brought for one partition: offsets, the payloads copied once into one block, and
/// which of them are reset markers.
struct ConsumedRecords {
    var offsets: [Int64] = []
    var block = MessageBlock()
    var markers: Set<Int> = []
    /// The newest message's timestamp, in milliseconds since the epoch (-1: none known).
    var newestTimestamp: Int64 = -1
    /// Each record's timestamp (-1: not known), for retention.
    var timestamps: [Int64] = []

    mutating func add(offset: Int64, isMarker: Bool, payload: UnsafeRawBufferPointer, timestamp: Int64) {
        timestamps.append(timestamp)
        if isMarker { markers.insert(offsets.count) } else { newestTimestamp = max(newestTimestamp, timestamp) }
        offsets.append(offset)
        block.append(payload)
    }
}
