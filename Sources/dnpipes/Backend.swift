import ArgumentParser
import Logging
import DNPipesCore
import DNPipesEmbedded
import DNPipesKafka

/// What selects and configures the Kafka backend.
struct KafkaSettings {
    var brokers: String
    var topicPrefix: String
    var configFile: String?
    /// `kafka.NAME=VALUE` options; they override the config file.
    var properties: [(String, String)]

    func configuration(maxMessageBytes: Int) throws -> KafkaConfiguration {
        var all: [(String, String)] = []
        if let configFile { all += try KafkaConfiguration.loadProperties(file: configFile) }
        all += properties
        // dnpipes's own settings ride along in the same namespace.
        var deleteRecords = KafkaConfiguration.DeleteRecordsMode.auto
        var windowBytes = 8 << 20
        all = try all.filter { key, value in
            switch key {
            case "dnpipes.delete.records":
                guard let mode = KafkaConfiguration.DeleteRecordsMode(rawValue: value) else {
                    throw CommandError("dnpipes.delete.records must be auto, on or off")
                }
                deleteRecords = mode
            case "dnpipes.window.bytes":
                guard let n = Int(value), n >= 1 << 16 else { throw CommandError("dnpipes.window.bytes must be a number of bytes, at least 65536") }
                windowBytes = n
            default:
                return true
            }
            return false
        }
        return KafkaConfiguration(brokers: brokers, topicPrefix: topicPrefix, properties: all,
                                  maxMessageBytes: maxMessageBytes, windowBytes: windowBytes, deleteRecords: deleteRecords)
    }
}

/// Opens the store a mount or command works on: Kafka when brokers are given, else the embedded store.
func makeStore(kafka: KafkaSettings?, dataDirectory: String, maxMessageBytes: Int, defaultRetention: Retention = .none,
               logger: Logger) throws -> PipeStore {
    if let kafka {
        var configuration = try kafka.configuration(maxMessageBytes: maxMessageBytes)
        configuration.defaultRetention = defaultRetention
        return try KafkaStore(configuration: configuration, logger: logger)
    }
    return try EmbeddedStore(directory: dataDirectory,
                             configuration: .init(maxMessageBytes: maxMessageBytes, defaultRetention: defaultRetention), logger: logger)
}
