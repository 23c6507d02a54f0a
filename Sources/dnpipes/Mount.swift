import ArgumentParser
import Dispatch
import Foundation
import Logging
import DNPipesCore
import DNPipesEmbedded
import DNPipesFUSE
#if canImport(Glibc)
import Glibc
#endif

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount a directory of pipes.",
        discussion: """
        Without --foreground, the command returns once the mount is ready (exit status 0) or has failed \
        (non-zero, with the reason), and the daemon goes on in the background, logging to --log-file.

        The embedded store keeps each pipe as an append-only, checksummed log under the data directory. A \
        writer's close() and fsync() return once its messages are on disk. One daemon owns a data directory.

        Options for -o (comma-separated; may be repeated):
          data_dir=DIR            same as --data-dir
          brokers=HOST:PORT,...   same as --brokers
          max_message=BYTES       same as --max-message-bytes
          topic_prefix=PREFIX     same as --topic-prefix
          kafka_config=FILE       same as --kafka-config
          kafka.NAME=VALUE        any librdkafka setting (overrides the config file)
          max_deliveries=N        a group's message given out N times undone goes to the
                                  dead-letter pipe (default 5)
          dead_letter_suffix=S    the dead-letter pipe of PIPE is PIPE followed by S (default .dead)
          group_timeout=SECONDS   a host silent this long loses the group messages it held
                                  (Kafka; default 10)
          retention=AGE           same as --retention
          metrics_address=H:P     same as --metrics-address
          busy_poll_us=N          after a request from the process that sent the one before, the
                                  daemon asks for the next one this long before it sleeps
                                  (default 100; 0: never)
          allow_other             let other users use the mount (file modes are then enforced)
          default_permissions     let the kernel check file modes
          uid=N, gid=N            owner of the pipes and directories (default: the daemon's user and group)
          mode=OCTAL              permission bits of the pipes (default 0644); directories add search (x)
        mount(8) options such as rw, defaults, noauto, nofail and _netdev are accepted and ignored.
        """
    )

    @Argument(help: "The directory to mount the pipes on.")
    var mountpoint: String

    @Option(help: ArgumentHelp("Where the embedded store keeps pipes.",
                               discussion: "Default: $XDG_DATA_HOME/dnpipes, or /var/lib/dnpipes for root.",
                               valueName: "dir"))
    var dataDir: String?

    @Option(help: ArgumentHelp("Kafka bootstrap brokers; pipes are then Kafka topics.", valueName: "host:port,..."))
    var brokers: String?

    @Option(help: ArgumentHelp("Prefix of the Kafka topics of this mount's pipes (not shown in the directory).", valueName: "prefix"))
    var topicPrefix: String?

    @Option(help: ArgumentHelp("librdkafka properties file (name=value lines), e.g. for TLS and SASL.",
                               discussion: "Refused when it holds a secret and other users can read it.", valueName: "file"))
    var kafkaConfig: String?

    @Option(name: .customShort("o"), help: ArgumentHelp("Mount options (see below).", valueName: "option,..."))
    var options: [String] = []

    @Option(help: ArgumentHelp("The largest message, in bytes; longer lines are refused with EMSGSIZE.", valueName: "bytes"))
    var maxMessageBytes: Int?

    @Option(help: ArgumentHelp("How long new pipes keep messages (s, m, h, d: 7d), or none.",
                               discussion: "Each pipe's own: setfattr -n user.dnpipes.retention -v AGE PIPE.", valueName: "age"))
    var retention: String?

    @Option(help: ArgumentHelp("Serve Prometheus metrics at http://HOST:PORT/metrics (off by default).", valueName: "host:port"))
    var metricsAddress: String?

    @Flag(name: [.customShort("f"), .long], help: "Stay in the foreground and log to standard error.")
    var foreground = false

    @Option(help: ArgumentHelp("Where the background daemon logs.", discussion: "Default: DATA_DIR/dnpipes.log.",
                               valueName: "file"))
    var logFile: String?

    @Option(help: .hidden) var source: String?
    @Option(help: .hidden) var readyFd: Int32?

    func validate() throws {
        if let maxMessageBytes, maxMessageBytes <= 0 { throw ValidationError("--max-message-bytes must be positive") }
        if let retention {
            do { _ = try Retention(parsing: retention) } catch { throw ValidationError("--retention: \(error)") }
        }
    }

    /// Everything resolved from the command line, the -o options and the mount source.
    struct Settings {
        var mountpoint: String
        var dataDirectory: String
        var brokers: String?
        var maxMessageBytes: Int
        var uid: UInt32?
        var gid: UInt32?
        var mode: UInt32?
        var fuseOptions: [String]
        var logFile: String
        var kafka: KafkaSettings?
        var groups: GroupSettings
        var defaultRetention: Retention
        var metricsAddress: String?
        var busyPollMicroseconds: UInt32
    }

    func settings() throws -> Settings {
        let parsed: MountOptions
        do { parsed = try MountOptions.parse(options + SecretOptions.take()) } catch { throw ValidationError("\(error)") }
        var dataDirectory = dataDir ?? parsed.dataDirectory
        var brokers = self.brokers ?? parsed.brokers
        if let source {
            if source.hasPrefix("kafka://") {
                brokers = brokers ?? String(source.dropFirst("kafka://".count)).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            } else if source.hasPrefix("/") || source.hasPrefix(".") {
                dataDirectory = dataDirectory ?? source
            } else if source != "dnpipes" && source != "none" {
                throw ValidationError("mount source '\(source)' is neither a directory nor kafka://HOST:PORT,...")
            }
        }
        let data = absolute(dataDirectory ?? Mount.defaultDataDirectory())
        if let address = metricsAddress ?? parsed.metricsAddress {
            do { _ = try MetricsServer.split(address) } catch { throw ValidationError("\(error)") }
        }
        return Settings(
            mountpoint: absolute(mountpoint),
            dataDirectory: data,
            brokers: brokers,
            maxMessageBytes: maxMessageBytes ?? parsed.maxMessageBytes ?? (1 << 20),
            uid: parsed.uid, gid: parsed.gid, mode: parsed.mode,
            // libfuse splits options at commas: a broker list in the fsname must have them escaped.
            fuseOptions: ["fsname=dnpipes:" + (brokers.map { "kafka://" + $0 } ?? data)
                .replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ",", with: "\\,"),
                          "subtype=dnpipes"] + parsed.fuse,
            logFile: absolute(logFile ?? data + "/dnpipes.log"),
            kafka: brokers.map {
                KafkaSettings(brokers: $0, topicPrefix: topicPrefix ?? parsed.topicPrefix ?? "",
                              configFile: (kafkaConfig ?? parsed.kafkaConfigFile).map(absolute), properties: parsed.kafka)
            },
            groups: GroupSettings(maxDeliveries: parsed.maxDeliveries ?? 5, deadLetterSuffix: parsed.deadLetterSuffix ?? ".dead",
                                  memberTimeout: parsed.groupTimeout ?? 10, othersMayBeAlive: brokers != nil),
            defaultRetention: try retention.map { try Retention(parsing: $0) } ?? parsed.retention ?? .none,
            metricsAddress: metricsAddress ?? parsed.metricsAddress,
            busyPollMicroseconds: parsed.busyPollMicroseconds ?? 100)
    }

    static func defaultDataDirectory() -> String {
        if getuid() == 0 { return "/var/lib/dnpipes" }
        let env = ProcessInfo.processInfo.environment
        if let xdg = env["XDG_DATA_HOME"], !xdg.isEmpty { return xdg + "/dnpipes" }
        return (env["HOME"] ?? NSHomeDirectory()) + "/.local/share/dnpipes"
    }

    func run() throws {
        let settings = try settings()
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: settings.mountpoint, isDirectory: &isDirectory) {
            // A dead FUSE mount answers ENOTCONN to stat, so check for that before calling it missing.
            var st = stat()
            if stat(settings.mountpoint, &st) != 0 && errno != ENOTCONN {
                throw CommandError("mount point \(settings.mountpoint) does not exist")
            }
        } else if !isDirectory.boolValue {
            throw CommandError("mount point \(settings.mountpoint) is not a directory")
        }
        if foreground {
            try Daemon.serve(settings, readyFD: readyFd)
        } else {
            try Daemon.start(settings, arguments: arguments)
        }
    }
}

func absolute(_ path: String) -> String {
    if path.hasPrefix("/") { return URL(fileURLWithPath: path).standardizedFileURL.path }
    return URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(path).standardizedFileURL.path
}
