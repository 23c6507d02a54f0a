import CRdKafka
import Foundation
import Logging
import DNPipesCore

/// Receives delivery reports for the messages it produced.
protocol DeliveryTarget: AnyObject, Sendable {
    func delivered(_ report: DeliveryReport)
    /// At shutdown: calls `callback` once nothing of this target's is in flight (at once if nothing is).
    func whenSettled(_ callback: @escaping @Sendable () -> Void)
    /// At shutdown, once the store has waited for delivery reports as long as it will: what is still in
    /// flight fails with `reason`, and everyone waiting for it is answered (once; later calls do nothing).
    func close(reason: rd_kafka_resp_err_t)
}

/// A writer on Kafka. `push` hands messages to librdkafka and returns at once; each message's delivery
/// report (not a flush of the whole client) counts it off, and `flush` completes when this writer's last
/// message is acknowledged by all in-sync replicas (acks=all), or with the first failure.
///
/// librdkafka's local queue is bounded. When it fills (the brokers are slow or away), what a push could not
/// queue stays here as the backlog, at most one push's worth, and goes to librdkafka as deliveries make room;
/// the next push is refused with `PipeError.full` until the backlog is gone, and the filesystem parks that
/// write rather than holding a thread, so it can still be interrupted.
// @unchecked Sendable: the bookkeeping is in its lock box; `token` is written once, in init.
final class KafkaWriter: PipeWriter, DeliveryTarget, @unchecked Sendable {
    private let pipe: KafkaPipe
    /// Held strongly, never the store: a handle (with its writer) may be let go after the store shut down, and
    /// the writer's deinit unregisters from the producer's delivery table. After shutdown the producer refuses
    /// pushes (its client is gone).
    private let producer: PipeProducer
    private let deliveries: DeliveryTable
    /// The longest message a push takes: the mount's, or librdkafka's own where the mount set
    /// kafka.message.max.bytes below it.
    private let limit: Int
    private let brokers: String
    private let logger: Logger
    private let ledger = LockedValue(WriterLedger())
    /// This writer's number in the delivery table (the opaque of its messages); set once, in init.
    private var token = 0

    init(pipe: KafkaPipe, producer: PipeProducer, configuration: KafkaConfiguration, logger: Logger) {
        self.pipe = pipe
        self.producer = producer
        deliveries = producer.deliveries
        limit = min(configuration.maxMessageBytes, producer.messageMaxBytes)
        brokers = configuration.brokers
        self.logger = logger
        token = producer.deliveries.register(self)
        pipe.writerOpened()
    }

    deinit {
        deliveries.unregister(token)
        pipe.writerClosed()
    }

    /// Producing is all the work there is (delivery is what flush waits for), so `accepted` is not used.
    func push(_ messages: MessageBlock, accepted: () -> Void) throws {
        guard !messages.isEmpty else { return }
        // Checked before anything is queued, so that a refused write stores none of its messages.
        let largest = messages.largest
        if largest > limit {
            throw PipeError.messageTooLarge(size: largest, limit: limit)
        }
        // Not after the store began to stop: what it waits for at shutdown does not grow.
        let taken = producer.isTaking ? ledger.withLock { $0.isClosed ? nil : $0.take(messages.count) } : nil
        guard let taken else { throw PipeError.unavailable("pipe \(pipe.name): the mount is stopping; nothing was pushed") }
        guard taken else { throw PipeError.full }
        let (queued, err) = producer.produce(topic: pipe.topic, messages: messages, token: token)
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return }
        if ledger.withLock({ $0.stopped(messages, queued: queued, error: err) }) {
            producer.whenRoom { self.drainBacklog() }
            return
        }
        // Flushes waiting for this writer may complete now; they answer the kernel, so not from within a
        // push, whose caller may hold its own lock (see `PipeWriter.push`).
        DispatchQueue.global().async { self.completeIfIdle() }
        if err == RD_KAFKA_RESP_ERR__QUEUE_FULL { throw PipeError.full }
        if err == RD_KAFKA_RESP_ERR__DESTROY { throw PipeError.unavailable("pipe \(pipe.name): the mount is stopping; nothing was pushed") }
        if err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE {
            throw PipeError.messageTooLarge(size: largest, limit: limit)
        }
        throw PipeError.io("pipe \(pipe.name): Kafka refused a message: \(KafkaHandle.describe(err))")
    }

    func whenRoom(_ callback: @escaping @Sendable () -> Void) {
        if ledger.withLock({ $0.park(callback) }) { return }
        producer.whenRoom(callback)
    }

    /// Hands the backlog to librdkafka as far as there is room (on the producer's thread). The callback holds
    /// this writer, so a backlog is delivered even after its handle is closed.
    private func drainBacklog() {
        guard let rest = ledger.withLock({ $0.backlog }) else { return }
        let (queued, err) = producer.produce(topic: pipe.topic, messages: rest, token: token)
        let (more, unparked) = ledger.withLock { $0.drained(rest, queued: queued, error: err) }
        if more { producer.whenRoom { self.drainBacklog() } }
        unparked.forEach { $0() }
        completeIfIdle()
    }

    func flush(completion: @escaping @Sendable (Error?) -> Void) {
        ledger.withLock { $0.flush(completion) }
        completeIfIdle()
    }

    func delivered(_ report: DeliveryReport) {
        ledger.withLock { $0.delivered(report) }
        if report.lastOffset >= 0 { pipe.acknowledged(offset: report.lastOffset) }
        completeIfIdle()
    }

    func whenSettled(_ callback: @escaping @Sendable () -> Void) {
        if !ledger.withLock({ $0.whenSettled(callback) }) { callback() }
    }

    func close(reason: rd_kafka_resp_err_t) {
        let closing = ledger.withLock { $0.close(reason: reason) }
        if closing.unacknowledged > 0 {
            logger.error("pipe \(pipe.name): \(closing.unacknowledged) messages not acknowledged by the brokers (\(brokers)) when the mount stopped; a close waiting for them fails (EIO), and they may or may not be stored")
        }
        answer(closing.flushes, failure: closing.failure)
        closing.waiters.forEach { $0() }
    }

    private func completeIfIdle() {
        let (done, settled) = ledger.withLock { ($0.takeCompletions(), $0.takeSettled()) }
        if let done { answer(done.flushes, failure: done.failure) }
        settled.forEach { $0() }
    }

    private func answer(_ flushes: [@Sendable (Error?) -> Void], failure: rd_kafka_resp_err_t?) {
        guard !flushes.isEmpty else { return }
        let error: Error? = failure.map { err in
            if err == RD_KAFKA_RESP_ERR__DESTROY {
                // Logged once, with the count, where the ledger was closed.
                return PipeError.unavailable("pipe \(pipe.name): the mount stopped before the brokers acknowledged its messages")
            }
            logger.error("pipe \(pipe.name): messages not acknowledged by the brokers (\(brokers)): \(KafkaHandle.describe(err))")
            return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE
                ? PipeError.io("the brokers refused a message as too large (the topic's max.message.bytes or the brokers' message.max.bytes is below the mount's max_message)")
                : PipeError.unavailable(KafkaHandle.describe(err))
        }
        flushes.forEach { $0(error) }
    }
}

/// A one-off delivery (a reset marker), answered once: by its report, or failed with the reason at shutdown.
final class OneDelivery: DeliveryTarget {
    private let done: @Sendable (rd_kafka_resp_err_t, Int64) -> Void
    /// Whether it was answered, and who waits for that (the store's shutdown).
    private let state = LockedValue<(answered: Bool, waiters: [@Sendable () -> Void])>((false, []))

    init(_ done: @escaping @Sendable (rd_kafka_resp_err_t, Int64) -> Void) { self.done = done }

    func delivered(_ report: DeliveryReport) { answer(report.error, report.lastOffset) }

    func whenSettled(_ callback: @escaping @Sendable () -> Void) {
        let answered = state.withLock { state in
            if !state.answered { state.waiters.append(callback) }
            return state.answered
        }
        if answered { callback() }
    }

    func close(reason: rd_kafka_resp_err_t) { answer(reason, -1) }

    private func answer(_ err: rd_kafka_resp_err_t, _ offset: Int64) {
        let waiters = state.withLock { state -> [@Sendable () -> Void]? in
            guard !state.answered else { return nil }
            defer { state = (true, []) }
            return state.waiters
        }
        guard let waiters else { return }
        done(err, offset)
        waiters.forEach { $0() }
    }
}

/// Maps the integers given to librdkafka as message opaques back to their targets. Writers are held weakly
/// (a closed writer's late reports are dropped); one-off targets strongly until their report arrives.
// @unchecked Sendable: every var is guarded by `lock`.
final class DeliveryTable: @unchecked Sendable {
    private struct Weak { weak var target: DeliveryTarget? }
    private let lock = NSLock()
    private var next = 0
    private var weakTargets: [Int: Weak] = [:]
    private var oneOffs: [Int: DeliveryTarget] = [:]
    private var fenced = false

    /// The brokers fenced the producer (its epoch is stale after an outage): it must be replaced.
    func noteFenced() {
        lock.lock(); defer { lock.unlock() }
        fenced = true
    }

    func takeFenced() -> Bool {
        lock.lock(); defer { lock.unlock() }
        defer { fenced = false }
        return fenced
    }

    func register(_ target: DeliveryTarget) -> Int {
        lock.lock(); defer { lock.unlock() }
        next += 1
        weakTargets[next] = Weak(target: target)
        return next
    }

    func registerOneOff(_ target: DeliveryTarget) -> Int {
        lock.lock(); defer { lock.unlock() }
        next += 1
        oneOffs[next] = target
        return next
    }

    func unregister(_ token: Int) {
        lock.lock(); defer { lock.unlock() }
        weakTargets[token] = nil
    }

    /// Every target that may still have messages in flight (for the store's shutdown).
    func all() -> [DeliveryTarget] {
        lock.lock(); defer { lock.unlock() }
        return weakTargets.values.compactMap(\.target) + Array(oneOffs.values)
    }

    func target(_ token: Int) -> DeliveryTarget? {
        lock.lock(); defer { lock.unlock() }
        if let once = oneOffs.removeValue(forKey: token) { return once }
        return weakTargets[token]?.target
    }
}
