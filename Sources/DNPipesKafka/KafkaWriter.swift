import CRdKafka
import Foundation
import DNPipesCore

/// Receives delivery reports for the messages it produced.
protocol DeliveryTarget: AnyObject {
    func delivered(_ report: DeliveryReport)
}

/// The outcome of some of one target's messages, from one delivery report event.
struct DeliveryReport {
    var count = 0
    /// The first failure among them.
    var error = RD_KAFKA_RESP_ERR_NO_ERROR
    /// The highest offset acknowledged among them (-1 if none).
    var lastOffset: Int64 = -1

    mutating func add(error err: rd_kafka_resp_err_t, offset: Int64) {
        count += 1
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            if error == RD_KAFKA_RESP_ERR_NO_ERROR { error = err }
        } else {
            lastOffset = max(lastOffset, offset)
        }
    }
}

/// A writer on Kafka. `push` hands messages to librdkafka and returns at once; each message's delivery
/// report (not a flush of the whole client) counts it off, and `flush` completes when this writer's last
/// message is acknowledged by all in-sync replicas (acks=all), or with the first failure.
///
/// librdkafka's local queue is bounded. When it fills (the brokers are slow or away), what a push could not
/// queue stays here as the backlog, at most one push's worth, and goes to librdkafka as deliveries make room;
/// the next push is refused with `PipeError.full` until the backlog is gone, and the filesystem parks that
/// write rather than holding a thread, so it can still be interrupted.
// @unchecked Sendable: every var is guarded by `lock`.
final class KafkaWriter: PipeWriter, DeliveryTarget, @unchecked Sendable {
    private let pipe: KafkaPipe
    private unowned let store: KafkaStore
    /// Held strongly: the writer's deinit unregisters from it, and a handle (with its writer) may be let go
    /// after the store shut down.
    private let deliveries: DeliveryTable
    private let lock = NSLock()
    /// Messages taken and not yet acknowledged or failed, the backlog's included.
    private var inFlight = 0
    private var failure: rd_kafka_resp_err_t?
    private var waiters: [@Sendable (Error?) -> Void] = []
    private var token: Int = 0
    private var backlog: MessageBlock?
    private var roomWaiters: [@Sendable () -> Void] = []

    init(pipe: KafkaPipe, store: KafkaStore) {
        self.pipe = pipe
        self.store = store
        deliveries = store.deliveries
        token = store.deliveries.register(self)
    }

    deinit { deliveries.unregister(token) }

    /// Producing is all the work there is (delivery is what flush waits for), so `accepted` is not used.
    func push(_ messages: MessageBlock, accepted: () -> Void) throws {
        guard !messages.isEmpty else { return }
        // Checked before anything is queued, so that a refused write stores none of its messages. The limit
        // is the mount's, or librdkafka's own where the mount set kafka.message.max.bytes below it.
        let largest = messages.largest
        let limit = min(store.configuration.maxMessageBytes, store.producer.messageMaxBytes)
        if largest > limit {
            throw PipeError.messageTooLarge(size: largest, limit: limit)
        }
        lock.lock()
        if backlog != nil { lock.unlock(); throw PipeError.full }
        inFlight += messages.count
        lock.unlock()
        let (queued, err) = store.producer.produce(topic: pipe.topic, messages: messages, token: token)
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return }
        if err == RD_KAFKA_RESP_ERR__QUEUE_FULL && queued > 0 {
            // Taken: the rest waits here for room, in order, ahead of anything pushed later.
            lock.lock(); backlog = messages.droppingFirst(queued); lock.unlock()
            store.producer.whenRoom { self.drainBacklog() }
            return
        }
        lock.lock(); inFlight -= messages.count - queued; lock.unlock()
        // Flushes waiting for this writer may complete now; they answer the kernel, so not from within a
        // push, whose caller may hold its own lock (see `PipeWriter.push`).
        DispatchQueue.global().async { self.completeIfIdle() }
        if err == RD_KAFKA_RESP_ERR__QUEUE_FULL { throw PipeError.full }
        if err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE {
            throw PipeError.messageTooLarge(size: largest, limit: limit)
        }
        throw PipeError.io("pipe \(pipe.name): Kafka refused a message: \(KafkaHandle.describe(err))")
    }

    func whenRoom(_ callback: @escaping @Sendable () -> Void) {
        lock.lock()
        if backlog != nil { roomWaiters.append(callback); lock.unlock(); return }
        lock.unlock()
        store.producer.whenRoom(callback)
    }

    /// Hands the backlog to librdkafka as far as there is room (on the producer's thread). The callback holds
    /// this writer, so a backlog is delivered even after its handle is closed.
    private func drainBacklog() {
        lock.lock()
        guard let rest = backlog else { lock.unlock(); return }
        lock.unlock()
        let (queued, err) = store.producer.produce(topic: pipe.topic, messages: rest, token: token)
        lock.lock()
        if err == RD_KAFKA_RESP_ERR_NO_ERROR {
            backlog = nil
        } else if err == RD_KAFKA_RESP_ERR__QUEUE_FULL {
            backlog = rest.droppingFirst(queued)
        } else {
            backlog = nil
            inFlight -= rest.count - queued
            if failure == nil { failure = err }
        }
        let more = backlog != nil
        let waiting = more ? [] : roomWaiters
        if !more { roomWaiters = [] }
        lock.unlock()
        if more { store.producer.whenRoom { self.drainBacklog() } }
        waiting.forEach { $0() }
        completeIfIdle()
    }

    func flush(completion: @escaping @Sendable (Error?) -> Void) {
        lock.lock()
        waiters.append(completion)
        lock.unlock()
        completeIfIdle()
    }

    func delivered(_ report: DeliveryReport) {
        lock.lock()
        inFlight -= report.count
        if report.error != RD_KAFKA_RESP_ERR_NO_ERROR && failure == nil { failure = report.error }
        lock.unlock()
        if report.lastOffset >= 0 { pipe.acknowledged(offset: report.lastOffset) }
        completeIfIdle()
    }

    private func completeIfIdle() {
        lock.lock()
        guard inFlight == 0, !waiters.isEmpty else { lock.unlock(); return }
        let done = waiters
        waiters = []
        let failed = failure
        failure = nil
        lock.unlock()
        let error: Error? = failed.map { err in
            store.logger.error("pipe \(pipe.name): messages not acknowledged by the brokers (\(store.configuration.brokers)): \(KafkaHandle.describe(err))")
            return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE
                ? PipeError.io("the brokers refused a message as too large (the topic's max.message.bytes or the brokers' message.max.bytes is below the mount's max_message)")
                : PipeError.unavailable(KafkaHandle.describe(err))
        }
        done.forEach { $0(error) }
    }
}

/// A one-off delivery (a reset marker).
final class OneDelivery: DeliveryTarget {
    let done: (rd_kafka_resp_err_t, Int64) -> Void
    init(_ done: @escaping (rd_kafka_resp_err_t, Int64) -> Void) { self.done = done }
    func delivered(_ report: DeliveryReport) { done(report.error, report.lastOffset) }
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

    func target(_ token: Int) -> DeliveryTarget? {
        lock.lock(); defer { lock.unlock() }
        if let once = oneOffs.removeValue(forKey: token) { return once }
        return weakTargets[token]?.target
    }
}
