import CRdKafka
import Foundation
import Logging
import DNPipesCore

/// One producer client and its topic handles, which must go before the client does (its deinit destroys them,
/// then the client is let go).
// @unchecked Sendable: `topicHandles` is reached only under `PipeProducer`'s producer lock.
private final class ProducerClient: @unchecked Sendable {
    let client: KafkaClient
    var topicHandles: [String: OpaquePointer] = [:]

    init(_ client: KafkaClient) { self.client = client }

    var handle: OpaquePointer { client.handle }

    /// The handle for a topic. Called with the producer lock held.
    func topicHandle(_ topic: String) -> OpaquePointer? {
        if let handle = topicHandles[topic] { return handle }
        let topicHandle = rd_kafka_topic_new(handle, topic, nil)
        topicHandles[topic] = topicHandle
        return topicHandle
    }

    deinit { topicHandles.values.forEach { rd_kafka_topic_destroy($0) } }
}

/// The mount's one producer client (idempotent, acks=all): every writer's messages go through it, and its
/// thread hands each delivery report to the writer whose message it was (see `DeliveryTable`).
// @unchecked Sendable: librdkafka's producer calls are thread-safe; `client` (and its topic handles) is
// guarded by `producerLock`; the room waiters are in their lock box.
final class PipeProducer: @unchecked Sendable {
    let deliveries = DeliveryTable()
    private let configuration: KafkaConfiguration
    private let logger: Logger
    /// Replaced when librdkafka reports a fatal producer error (an idempotent producer fenced after its
    /// messages timed out in an outage): the messages in flight then fail, and new pushes go to a new producer.
    /// Nil once closed: a push then fails, and a call still using the old client holds it until it returns.
    private var client: ProducerClient?
    private let producerLock = NSLock()
    /// Writers (and reset markers) held back by a full local queue, called back after the next round of delivery reports (at
    /// least every 0.2 s): they try again, from the producer's thread, never from a FUSE one.
    /// Once closed, a waiter is called at once: its retry is refused, and the refusal reaches its writer.
    private let room = LockedValue<(waiters: [@Sendable () -> Void], closed: Bool)>(([], false))
    /// False once shutdown began (see `stopTaking`).
    private let taking = LockedValue(true)

    /// The largest message librdkafka will take (its `message.max.bytes`, dnpipes's default unless the mount
    /// sets `kafka.message.max.bytes`): a message above it is refused when it is produced.
    let messageMaxBytes: Int

    init(configuration: KafkaConfiguration, logger: Logger) throws {
        self.configuration = configuration
        messageMaxBytes = configuration.properties.last(where: { $0.0 == "message.max.bytes" }).flatMap { Int($0.1) }
            ?? PipeProducer.defaultMessageMaxBytes(configuration)
        self.logger = logger
        client = ProducerClient(try PipeProducer.makeClient(configuration))
    }

    /// Serves delivery reports until `isRunning` says stop, replacing the client if it fails for good.
    func run(while isRunning: () -> Bool) {
        while isRunning(), let client = current {
            serveDeliveryReports(client.handle, timeout: 200)
            replaceProducerIfFatal(client)
            takeRoomWaiters().forEach { $0() }
        }
    }

    /// Calls `callback` once, after the next round of delivery reports (which is when room is made).
    func whenRoom(_ callback: @escaping @Sendable () -> Void) {
        let closed = room.withLock { room in
            if !room.closed { room.waiters.append(callback) }
            return room.closed
        }
        if closed { callback() }
    }

    private func takeRoomWaiters() -> [@Sendable () -> Void] {
        room.withLock { room in defer { room.waiters = [] }; return room.waiters }
    }

    /// Whether new messages are taken (false once shutdown began).
    var isTaking: Bool { taking.withLock { $0 } }

    /// Shutdown's first step, while the producer's thread still serves delivery reports: no new message is
    /// taken (a push is refused, a backlog still goes out), then this waits, up to `bound` seconds, until
    /// nothing of any writer's or reset marker's is in flight. Then it closes every delivery target: what is
    /// still in flight fails, so every flush waiting for it is answered (EIO) rather than never.
    func stopTaking(waitingUpTo bound: Double) {
        taking.withLock { $0 = false }
        let targets = deliveries.all()
        let settled = DispatchGroup()
        for target in targets {
            settled.enter()
            target.whenSettled { settled.leave() }
        }
        if settled.wait(timeout: .now() + bound) == .timedOut {
            logger.warning("the brokers (\(configuration.brokers)) did not acknowledge every message within \(bound) s of the mount stopping; failing the rest")
        }
        targets.forEach { $0.close(reason: RD_KAFKA_RESP_ERR__DESTROY) }
    }

    /// Lets go of the client (at shutdown, once the producer's thread has stopped): it is destroyed here, or
    /// by the last call still using it. Pushes from now on fail, those waiting for room included: they are
    /// called back now, and from now on at once. What librdkafka still holds was failed by `stopTaking`: it
    /// is purged first, so that destroying the client does not wait for brokers that do not answer.
    func close() {
        producerLock.lock()
        let last = client
        client = nil
        producerLock.unlock()
        if let last { rd_kafka_purge(last.handle, Int32(RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)) }
        withExtendedLifetime(last) {}   // destroyed here, after the lock is let go, unless a call still holds it
        room.withLock { $0.closed = true }
        takeRoomWaiters().forEach { $0() }
    }

    /// Room for the largest line the mount takes plus the record's framing.
    private static func defaultMessageMaxBytes(_ configuration: KafkaConfiguration) -> Int {
        max(configuration.maxMessageBytes + 1024, 1_000_000)
    }

    private static func makeClient(_ configuration: KafkaConfiguration) throws -> KafkaClient {
        let messageMax = String(defaultMessageMaxBytes(configuration))
        return try KafkaHandle.make(RD_KAFKA_PRODUCER, defaults: [
            ("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "2"),
            ("message.timeout.ms", "30000"), ("message.max.bytes", messageMax),
            ("client.id", "dnpipes-producer"),
        ], configuration: configuration) { conf in
            // Delivery reports come as events carrying a batch of messages each (see serveDeliveryReports).
            rd_kafka_conf_set_events(conf, Int32(RD_KAFKA_EVENT_DR))
        }
    }

    /// Waits up to `timeout` ms for one delivery report event and hands its messages' outcomes to their
    /// writers, a call per writer per event rather than per message. Returns whether there was an event.
    @discardableResult
    private func serveDeliveryReports(_ client: OpaquePointer, timeout: Int32) -> Bool {
        let queue = rd_kafka_queue_get_main(client)
        defer { rd_kafka_queue_destroy(queue) }
        guard let event = rd_kafka_queue_poll(queue, timeout) else { return false }
        defer { rd_kafka_event_destroy(event) }
        guard rd_kafka_event_type(event) == RD_KAFKA_EVENT_DR else { return true }
        var reports: [Int: DeliveryReport] = [:]
        var messages = [UnsafePointer<rd_kafka_message_t>?](repeating: nil, count: 1024)
        while true {
            let n = rd_kafka_event_message_array(event, &messages, messages.count)
            if n == 0 { break }
            for i in 0..<n {
                guard let m = messages[i]?.pointee else { continue }
                let err = m.err
                if err == RD_KAFKA_RESP_ERR_PRODUCER_FENCED || err == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH
                    || err == RD_KAFKA_RESP_ERR__FENCED {
                    deliveries.noteFenced()
                }
                if err != RD_KAFKA_RESP_ERR_NO_ERROR { KafkaMetrics.deliveryFailed(err) }
                reports[Int(bitPattern: m._private), default: DeliveryReport()].add(error: err, offset: m.offset)
            }
        }
        for (token, report) in reports { deliveries.target(token)?.delivered(report) }
        return true
    }

    private var current: ProducerClient? {
        producerLock.lock(); defer { producerLock.unlock() }
        return client
    }

    /// A fatal producer error leaves that client unable to produce for good; start a new one so that writes
    /// recover once the brokers do. What the old one still held fails (its writers' close reports EIO).
    private func replaceProducerIfFatal(_ failed: ProducerClient) {
        var errstr = [CChar](repeating: 0, count: 512)
        let fatal = rd_kafka_fatal_error(failed.handle, &errstr, errstr.count)
        let fenced = deliveries.takeFenced()
        guard fatal != RD_KAFKA_RESP_ERR_NO_ERROR || fenced else { return }
        let why = fatal != RD_KAFKA_RESP_ERR_NO_ERROR ? text(of: errstr) : "the brokers fenced its producer epoch"
        logger.warning("Kafka producer failed for good (\(why)); starting a new one")
        guard let fresh = try? PipeProducer.makeClient(configuration) else {
            logger.error("cannot start a new Kafka producer; pushes will fail")
            return
        }
        producerLock.lock()
        // Closed meanwhile: the new client is not needed.
        if client === failed { client = ProducerClient(fresh) }
        producerLock.unlock()
        rd_kafka_purge(failed.handle, Int32(RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT))
        while serveDeliveryReports(failed.handle, timeout: 0) {}   // the failure reports of what was purged
        // The failed client (and its topic handles) is destroyed when this thread lets go of it.
    }

    /// Hands a block of messages to the producer in one call (rd_kafka_produce_batch on a cached topic
    /// handle), holding the producer lock once for the block, and never waits. Returns how many were queued
    /// and the error that stopped the rest, if any. A full local queue stops a batch at a message and fails
    /// every one after it, so what is queued is always a prefix, in order; the caller keeps the rest and
    /// tries again when `whenRoom` calls back.
    func produce(topic: String, messages: MessageBlock, token: Int) -> (queued: Int, error: rd_kafka_resp_err_t) {
        let opaque = UnsafeMutableRawPointer(bitPattern: token)
        let count = messages.count
        var batch = [rd_kafka_message_t](repeating: rd_kafka_message_t(), count: count)
        return messages.bytes.withUnsafeBytes { raw in
            for (i, r) in messages.ranges.enumerated() {
                batch[i].payload = raw.baseAddress.map { UnsafeMutableRawPointer(mutating: $0 + r.lowerBound) }
                batch[i].len = r.count
                batch[i]._private = opaque
            }
            producerLock.lock()
            defer { producerLock.unlock() }
            guard let client else { return (0, RD_KAFKA_RESP_ERR__DESTROY) }
            guard let topicHandle = client.topicHandle(topic) else { return (0, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) }
            let n = batch.withUnsafeMutableBufferPointer { all in
                rd_kafka_produce_batch(topicHandle, 0, RD_KAFKA_MSG_F_COPY, all.baseAddress!, Int32(count))
            }
            let queued = Int(max(n, 0))
            return (queued, queued == count ? RD_KAFKA_RESP_ERR_NO_ERROR : batch[queued].err)
        }
    }

    func produce(topic: String, partition: Int32, payload: [UInt8], token: Int, marker: Bool) -> rd_kafka_resp_err_t {
        let opaque = UnsafeMutableRawPointer(bitPattern: token)
        let deadline = Date().addingTimeInterval(30)
        guard isTaking else { return RD_KAFKA_RESP_ERR__DESTROY }
        while true {
            producerLock.lock()
            let err = client.map { client in payload.withUnsafeBytes { raw in
                dnp_produce(client.handle, topic, partition, raw.baseAddress, raw.count, opaque, marker ? KafkaStore.markerHeader : nil)
            } } ?? RD_KAFKA_RESP_ERR__DESTROY
            producerLock.unlock()
            // A full local queue pushes back until deliveries make room (as for a writer's messages).
            guard err == RD_KAFKA_RESP_ERR__QUEUE_FULL, Date() < deadline else { return err }
            waitForRoom()
        }
    }

    /// Waits until a round of delivery reports may have made room in the local queue, or 0.1 s (for a reset
    /// marker, which is produced off the FUSE threads).
    private func waitForRoom() {
        let room = DispatchSemaphore(value: 0)
        whenRoom { room.signal() }
        _ = room.wait(timeout: .now() + 0.1)
    }
}
