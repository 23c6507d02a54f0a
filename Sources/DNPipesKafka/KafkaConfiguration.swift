import Foundation
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// How a mount (or a command) reaches Kafka.
public struct KafkaConfiguration: Sendable {
    /// Bootstrap brokers, `host:port,...`.
    public var brokers: String
    /// Prepended to every pipe's topic name, so that several mounts can share a cluster without sharing pipes.
    public var topicPrefix: String
    /// librdkafka properties given by the user (`-o kafka.NAME=VALUE`, `--kafka-config FILE`); they override
    /// dnpipes's defaults.
    public var properties: [(String, String)]
    public var maxMessageBytes: Int
    /// Memory for the messages a pipe's shared stream holds for its readers.
    public var windowBytes: Int
    /// How long mounting waits for the cluster to answer.
    public var connectTimeout: Double
    /// Whether reset also calls DeleteRecords to free the broker's storage: `auto` tries and stops trying
    /// once a broker shows it does not support it.
    public var deleteRecords: DeleteRecordsMode
    /// The retention of pipes made from now on.
    public var defaultRetention: Retention = .none
    /// How long shutdown waits for the brokers to acknowledge what writers have in flight before it fails the
    /// rest (their closes report EIO): long enough for a healthy cluster, short enough for an unmount.
    public var shutdownTimeout: Double = 5

    public enum DeleteRecordsMode: String, Sendable { case auto, on, off }

    public init(brokers: String, topicPrefix: String = "", properties: [(String, String)] = [],
                maxMessageBytes: Int = 1 << 20, windowBytes: Int = 8 << 20, connectTimeout: Double = 15,
                deleteRecords: DeleteRecordsMode = .auto) {
        self.brokers = brokers
        self.topicPrefix = topicPrefix
        self.properties = properties
        self.maxMessageBytes = maxMessageBytes
        self.windowBytes = windowBytes
        self.connectTimeout = connectTimeout
        self.deleteRecords = deleteRecords
    }

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Whether a librdkafka property holds a secret (never logged; a file holding one must be private).
    public static func isSecret(_ key: String) -> Bool {
        let k = key.lowercased()
        return k.contains("password") || k.contains("secret") || k == "ssl.key.pem" || k == "sasl.oauthbearer.config"
            || k.hasSuffix(".token")
    }

    /// Parses librdkafka's properties format: `name=value` lines, `#` comments, blank lines.
    public static func parseProperties(_ text: String, source: String) throws -> [(String, String)] {
        var result: [(String, String)] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "="), eq != line.startIndex else {
                throw Invalid(description: "\(source):\(n + 1): expected name=value")
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            result.append((key, value))
        }
        return result
    }

    /// Reads a properties file, refusing one that other users can read when it holds a secret.
    public static func loadProperties(file path: String) throws -> [(String, String)] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Invalid(description: "cannot read Kafka config file \(path)")
        }
        let properties = try parseProperties(text, source: path)
        var st = stat()
        guard stat(path, &st) == 0 else { throw Invalid(description: "cannot stat \(path)") }
        if let secret = properties.first(where: { isSecret($0.0) }), st.st_mode & 0o077 != 0 {
            throw Invalid(description: "Kafka config file \(path) holds a secret (\(secret.0)) but other users can read it; chmod 600 it")
        }
        return properties
    }

    /// A description safe for logs: property names, never secret values.
    public var loggable: String {
        let shown = properties.map { KafkaConfiguration.isSecret($0.0) ? "\($0.0)=<redacted>" : "\($0.0)=\($0.1)" }
        return "brokers \(brokers)" + (topicPrefix.isEmpty ? "" : ", topic prefix \(topicPrefix)")
            + (shown.isEmpty ? "" : ", " + shown.joined(separator: ", "))
    }
}
