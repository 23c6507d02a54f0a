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
        all = try all.filter { key, value in
            guard key == "dnpipes.delete.records" else { return true }
            guard let mode = KafkaConfiguration.DeleteRecordsMode(rawValue: value) else {
                throw CommandError("dnpipes.delete.records must be auto, on or off")
            }
            deleteRecords = mode
            return false
        }
        return KafkaConfiguration(brokers: brokers, topicPrefix: topicPrefix, properties: all,
                                  maxMessageBytes: maxMessageBytes, deleteRecords: deleteRecords)
    }
}

/// Opens the store a mount or command works on: Kafka when brokers are given, else the embedded store.
func makeStore(kafka: KafkaSettings?, dataDirectory: String, maxMessageBytes: Int, logger: Logger) throws -> PipeStore {
    if let kafka {
        return try KafkaStore(configuration: kafka.configuration(maxMessageBytes: maxMessageBytes), logger: logger)
    }
    return try EmbeddedStore(directory: dataDirectory, configuration: .init(maxMessageBytes: maxMessageBytes), logger: logger)
}
