import CRdKafka
import Foundation

/// Creates librdkafka clients from dnpipes's defaults plus the user's properties.
enum KafkaHandle {
    struct Failure: Error, CustomStringConvertible { let description: String }

    static func make(_ type: rd_kafka_type_t, defaults: [(String, String)], configuration: KafkaConfiguration,
                     configure: ((OpaquePointer) -> Void)? = nil) throws -> OpaquePointer {
        let conf = rd_kafka_conf_new()!
        var errstr = [CChar](repeating: 0, count: 512)
        for (key, value) in [("bootstrap.servers", configuration.brokers)] + defaults + configuration.properties {
            if rd_kafka_conf_set(conf, key, value, &errstr, errstr.count) != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                let shown = KafkaConfiguration.isSecret(key) ? "<redacted>" : value
                throw Failure(description: "Kafka setting \(key)=\(shown): \(String(cString: errstr))")
            }
        }
        configure?(conf)
        guard let rk = rd_kafka_new(type, conf, &errstr, errstr.count) else {
            throw Failure(description: "cannot create a Kafka client: \(String(cString: errstr))")
        }
        return rk
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
