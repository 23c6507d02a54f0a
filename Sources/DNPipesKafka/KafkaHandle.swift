import CRdKafka
import Foundation

/// One librdkafka client, which owns its handle: the handle is destroyed when the last reference to the client
/// goes, so code that holds the client can never reach a destroyed handle. Whoever holds the client for the
/// mount (`PipeProducer`, `StreamConsumer`, `KafkaAdmin`) lets go of it at shutdown, after the threads and queues
/// that use it have stopped; a call still out holds it until it returns.
// @unchecked Sendable: the handle never changes, and librdkafka's client calls are thread-safe.
final class KafkaClient: @unchecked Sendable {
    let handle: OpaquePointer

    init(handle: OpaquePointer) { self.handle = handle }

    deinit { rd_kafka_destroy(handle) }
}

/// Runs `body` with a partition list of these partitions at these offsets, and destroys the list after,
/// whatever `body` does. librdkafka's requests that take a list copy it, so none outlives the call.
func withTopicPartitionList<Result>(_ entries: [(topic: String, partition: Int32, offset: Int64)],
                                    _ body: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) throws -> Result) rethrows -> Result {
    let list = rd_kafka_topic_partition_list_new(Int32(entries.count))!
    defer { rd_kafka_topic_partition_list_destroy(list) }
    for e in entries { rd_kafka_topic_partition_list_add(list, e.topic, e.partition).pointee.offset = e.offset }
    return try body(list)
}

/// One topic's partitions 0..<offsets.count at those offsets.
func partitionEntries(_ topic: String, offsets: [Int64]) -> [(topic: String, partition: Int32, offset: Int64)] {
    offsets.enumerated().map { (topic, Int32($0.offset), $0.element) }
}

/// Creates librdkafka clients from dnpipes's defaults plus the user's properties.
enum KafkaHandle {
    struct Failure: Error, CustomStringConvertible { let description: String }

    static func make(_ type: rd_kafka_type_t, defaults: [(String, String)], configuration: KafkaConfiguration,
                     configure: ((OpaquePointer) -> Void)? = nil) throws -> KafkaClient {
        let conf = rd_kafka_conf_new()!
        var errstr = [CChar](repeating: 0, count: 512)
        // A broker that comes back is reconnected to within a second (librdkafka backs off up to 10 s by
        // default, long enough for a waiting close() to time out after the broker is already back).
        let common = [("bootstrap.servers", configuration.brokers), ("reconnect.backoff.max.ms", "1000")]
        for (key, value) in common + defaults + configuration.properties {
            if rd_kafka_conf_set(conf, key, value, &errstr, errstr.count) != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                let shown = KafkaConfiguration.isSecret(key) ? "<redacted>" : value
                throw Failure(description: "Kafka setting \(key)=\(shown): \(text(of: errstr))")
            }
        }
        for (key, value) in configuration.properties where KafkaConfiguration.isSecret(key) && !value.isEmpty {
            KafkaLog.addSecret(value)
        }
        rd_kafka_conf_set_log_cb(conf, kafkaLogLine)
        configure?(conf)
        guard let rk = rd_kafka_new(type, conf, &errstr, errstr.count) else {
            rd_kafka_conf_destroy(conf)   // rd_kafka_new takes the configuration only when it succeeds
            throw Failure(description: "cannot create a Kafka client: \(text(of: errstr))")
        }
        return KafkaClient(handle: rk)
    }

    static func describe(_ err: rd_kafka_resp_err_t) -> String { String(cString: rd_kafka_err2str(err)) }

    /// librdkafka's version, which must be at least 2.3 (older ones mis-read tagged protocol fields).
    static func checkVersion() throws {
        let v = rd_kafka_version()
        if v < 0x0203_0000 {
            throw Failure(description: "librdkafka \(String(cString: rd_kafka_version_str())) is too old: dnpipes needs 2.3 or newer (run scripts/setup)")
        }
    }
}

/// librdkafka's own log lines, logged through swift-log (`KafkaLogger`) with every secret value cut out:
/// librdkafka may quote a property's value in an error message.
enum KafkaLog {
    nonisolated(unsafe) private static var secrets: [String] = []
    private static let lock = NSLock()

    /// Registers a secret value, and the parts of it librdkafka may quote on their own (a value such as
    /// sasl.oauthbearer.config holds several name=value pairs).
    static func addSecret(_ value: String) {
        lock.lock(); defer { lock.unlock() }
        var parts = [value]
        for token in value.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" }).map(String.init) {
            parts.append(token)
            if let eq = token.firstIndex(of: "=") { parts.append(String(token[token.index(after: eq)...])) }
        }
        for p in parts where p.count >= 3 && !secrets.contains(p) { secrets.append(p) }
        secrets.sort { $0.count > $1.count }   // longest first, so a whole value goes before its parts
    }

    static func redact(_ line: String) -> String {
        lock.lock(); defer { lock.unlock() }
        var out = line
        for s in secrets { out = out.replacingOccurrences(of: s, with: "<redacted>") }
        return out
    }
}

private let kafkaLogLine: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Void = { rk, level, facility, buf in
    let name = rk.map { String(cString: rd_kafka_name($0)) } ?? "rdkafka"
    let text = KafkaLog.redact(buf.map { String(cString: $0) } ?? "")
    KafkaLogger.logger.log(level: KafkaLogger.level(level), "\(text)",
                           metadata: ["facility": "\(facility.map { String(cString: $0) } ?? "")", "client": "\(name)"])
}

/// The text in a NUL-terminated C buffer (librdkafka's error strings).
func text(of buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
