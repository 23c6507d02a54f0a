import CRdKafka
import DNPipesCore

/// A writer's bookkeeping, apart from librdkafka: the messages it has in flight, the backlog a full local queue
/// left of a push, the writes parked until that backlog is gone, the flushes waiting for its deliveries, and the
/// first failure they are to report. A value that calls nothing: `KafkaWriter` keeps it in its lock box and, once
/// the lock is let go, calls what it hands back.
struct WriterLedger {
    /// Messages taken and not yet acknowledged or failed, the backlog's included.
    private(set) var inFlight = 0
    /// What librdkafka could not queue of the last push, in order; at most one push's worth.
    private(set) var backlog: MessageBlock?
    private var failure: rd_kafka_resp_err_t?
    private var flushes: [@Sendable (Error?) -> Void] = []
    private var parked: [@Sendable () -> Void] = []

    /// Takes a push of `count` messages, unless a backlog is still waiting for room (false: the push is
    /// refused as full, and none of it is counted).
    mutating func take(_ count: Int) -> Bool {
        guard backlog == nil else { return false }
        inFlight += count
        return true
    }

    /// librdkafka queued the first `queued` of a push's `messages` and stopped at `error`. Returns true when the
    /// rest became the backlog (the queue was full after some were taken: they wait for room, ahead of anything
    /// pushed later); otherwise the rest was not taken and is no longer counted.
    mutating func stopped(_ messages: MessageBlock, queued: Int, error: rd_kafka_resp_err_t) -> Bool {
        if error == RD_KAFKA_RESP_ERR__QUEUE_FULL && queued > 0 {
            backlog = messages.droppingFirst(queued)
            return true
        }
        inFlight -= messages.count - queued
        return false
    }

    /// librdkafka queued the first `queued` of the backlog `rest` and stopped at `error` (none: all of it). A
    /// full queue keeps the rest as the backlog; any other error fails it, and the flushes report that.
    /// Returns whether a backlog is left, and, when none is, the parked writes to call back.
    mutating func drained(_ rest: MessageBlock, queued: Int, error: rd_kafka_resp_err_t) -> (more: Bool, unparked: [@Sendable () -> Void]) {
        if error == RD_KAFKA_RESP_ERR_NO_ERROR {
            backlog = nil
        } else if error == RD_KAFKA_RESP_ERR__QUEUE_FULL {
            backlog = rest.droppingFirst(queued)
        } else {
            backlog = nil
            inFlight -= rest.count - queued
            if failure == nil { failure = error }
        }
        guard backlog == nil else { return (true, []) }
        defer { parked = [] }
        return (false, parked)
    }

    /// Parks a write until the backlog is gone; false when there is none (the write waits for the producer's
    /// room instead).
    mutating func park(_ callback: @escaping @Sendable () -> Void) -> Bool {
        guard backlog != nil else { return false }
        parked.append(callback)
        return true
    }

    mutating func flush(_ completion: @escaping @Sendable (Error?) -> Void) { flushes.append(completion) }

    /// A delivery report for some of this writer's messages.
    mutating func delivered(_ report: DeliveryReport) {
        inFlight -= report.count
        if report.error != RD_KAFKA_RESP_ERR_NO_ERROR && failure == nil { failure = report.error }
    }

    /// Once nothing is in flight: the waiting flushes, and the failure they report (the first since the last
    /// ones completed), both taken.
    mutating func takeCompletions() -> (flushes: [@Sendable (Error?) -> Void], failure: rd_kafka_resp_err_t?)? {
        guard inFlight == 0, !flushes.isEmpty else { return nil }
        defer { flushes = []; failure = nil }
        return (flushes, failure)
    }
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
