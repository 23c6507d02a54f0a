import CoreMetrics
import CRdKafka
import Logging

/// The Kafka backend's metrics (recorded through swift-metrics; see the daemon's --metrics-address):
/// messages the brokers did not take, whether they answered the last metadata request, and what was fetched.
enum KafkaMetrics {
    /// Messages whose delivery failed (after librdkafka's own retries), by error.
    static func deliveryFailed(_ err: rd_kafka_resp_err_t) {
        Counter(label: "dnpipes_kafka_delivery_failures_total", dimensions: [("error", String(cString: rd_kafka_err2name(err)))])
            .increment()
    }

    private static let reachable = Gauge(label: "dnpipes_kafka_brokers_reachable")
    private static let fetched = Counter(label: "dnpipes_kafka_fetched_messages_total")

    /// Messages the mount's consumer took from the brokers (a message fetched again after a rewind counts
    /// again): what reading pipes here costs the brokers.
    static func messagesFetched(_ count: Int) { fetched.increment(by: count) }

    /// 1 while the brokers answer metadata requests (every two seconds), 0 once one went unanswered.
    static func brokersAnswered(_ answered: Bool) { reachable.record(answered ? 1 : 0) }
}

/// librdkafka's own log lines, through swift-log with their level, facility and client as metadata.
enum KafkaLogger {
    static let logger = Logger(label: "librdkafka")

    /// syslog levels, as librdkafka gives them. Its debug lines come only when its `debug` setting asks
    /// for them, so they are logged at info, where the daemon's log shows them.
    static func level(_ syslog: Int32) -> Logger.Level {
        switch syslog {
        case ...2: return .critical
        case 3: return .error
        case 4: return .warning
        case 5: return .notice
        default: return .info
        }
    }
}
