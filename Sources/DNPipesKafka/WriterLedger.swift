import CRdKafka
import DNPipesCore

/// A writer's bookkeeping, apart from librdkafka: the messages it has in flight, the backlog a full local queue
/// left of a push, the writes parked until that backlog is gone, the flushes waiting for its deliveries, and the
/// first failure they are to report. A value that calls nothing: `KafkaWriter` keeps it in its lock box and, once
/// the lock is let go, calls what it hands back.
///
/// At shutdown the store waits (bounded) for every writer to have nothing in flight (`whenSettled`), then
/// closes each ledger (`close`): what is still in flight then counts as failed, every waiting flush is answered
/// with that failure, and the ledger takes nothing more and ignores late delivery reports.
struct WriterLedger {
    /// Messages taken and not yet acknowledged or failed, the backlog's included.
    private(set) var inFlight = 0
    /// What librdkafka could not queue of the last push, in order; at most one push's worth.
    private(set) var backlog: MessageBlock?
    private var failure: rd_kafka_resp_err_t?
    private var flushes: [@Sendable (Error?) -> Void] = []
    private var parked: [@Sendable () -> Void] = []
    /// Waiting for nothing to be in flight (the store's shutdown).
    private var settleWaiters: [@Sendable () -> Void] = []
    /// Closed at shutdown (see `close`).
    private(set) var isClosed = false

    /// Takes a push of `count` messages, unless a backlog is still waiting for room (false: the push is
    /// refused as full, and none of it is counted). The caller checks `isClosed` first.
    mutating func take(_ count: Int) -> Bool {
        guard backlog == nil else { return false }
        inFlight += count
        return true
    }

    /// librdkafka queued the first `queued` of a push's `messages` and stopped at `error`. Returns true when the
    /// rest became the backlog (the queue was full after some were taken: they wait for room, ahead of anything
    /// pushed later); otherwise the rest was not taken and is no longer counted.
    mutating func stopped(_ messages: MessageBlock, queued: Int, error: rd_kafka_resp_err_t) -> Bool {
        guard !isClosed else { return false }
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
        guard !isClosed else { return (false, []) }
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
        guard !isClosed else { return }
        inFlight -= report.count
        if report.error != RD_KAFKA_RESP_ERR_NO_ERROR && failure == nil { failure = report.error }
    }

    /// Once nothing is in flight: the waiting flushes, and the failure they report (the first since the last
    /// ones completed), both taken. After `close` a failure stays, for the flushes of a handle closed later.
    mutating func takeCompletions() -> (flushes: [@Sendable (Error?) -> Void], failure: rd_kafka_resp_err_t?)? {
        guard inFlight == 0, !flushes.isEmpty else { return nil }
        defer { flushes = []; if !isClosed { failure = nil } }
        return (flushes, failure)
    }

    /// Calls back once nothing is in flight: false when that is already so (the caller calls it at once).
    mutating func whenSettled(_ callback: @escaping @Sendable () -> Void) -> Bool {
        guard inFlight > 0 else { return false }
        settleWaiters.append(callback)
        return true
    }

    /// Once nothing is in flight: the shutdown waiters, taken.
    mutating func takeSettled() -> [@Sendable () -> Void] {
        guard inFlight == 0 else { return [] }
        defer { settleWaiters = [] }
        return settleWaiters
    }

    /// What `close` leaves to answer: the flushes with the failure they report, the shutdown and parked
    /// waiters, and how many messages were still in flight (now counted as failed with `reason`).
    struct Closing {
        var flushes: [@Sendable (Error?) -> Void]
        var failure: rd_kafka_resp_err_t?
        var waiters: [@Sendable () -> Void]
        var unacknowledged: Int
    }

    /// The store stops and has waited for this writer's delivery reports as long as it will: whatever is
    /// still in flight, the backlog's included, fails with `reason`. From now on nothing is taken, and
    /// reports that still arrive change nothing.
    mutating func close(reason: rd_kafka_resp_err_t) -> Closing {
        let unacknowledged = isClosed ? 0 : inFlight
        isClosed = true
        if unacknowledged > 0 && failure == nil { failure = reason }
        inFlight = 0
        backlog = nil
        let waiters = settleWaiters + parked
        settleWaiters = []
        parked = []
        let done = takeCompletions()
        return Closing(flushes: done?.flushes ?? [], failure: done?.failure ?? failure, waiters: waiters,
                       unacknowledged: unacknowledged)
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
