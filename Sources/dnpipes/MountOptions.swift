import DNPipesCore

/// The `-o` options of a mount, split into dnpipes's own, those libfuse understands, and those mount(8)
/// passes that mean nothing to a FUSE daemon.
struct MountOptions: Equatable {
    var dataDirectory: String?
    var brokers: String?
    var maxMessageBytes: Int?
    var topicPrefix: String?
    var kafkaConfigFile: String?
    /// Owner and permission bits of the mount's pipes and directories (`uid=`, `gid=`, `mode=`).
    var uid: UInt32?
    var gid: UInt32?
    var mode: UInt32?
    /// Consumer groups: deliveries before the dead-letter pipe, its suffix, and the lost-member timeout.
    var maxDeliveries: Int?
    var deadLetterSuffix: String?
    var groupTimeout: Double?
    /// The retention of pipes made from now on (see `Retention`).
    var retention: Retention?
    /// Where Prometheus scrapes the daemon's metrics (HOST:PORT); off when nil.
    var metricsAddress: String?
    /// How long the daemon's reading thread keeps asking for the next request of the process that sent the
    /// last two before it sleeps (µs).
    var busyPollMicroseconds: UInt32?
    var fuse: [String] = []
    var kafka: [(String, String)] = []

    static func == (a: MountOptions, b: MountOptions) -> Bool {
        a.dataDirectory == b.dataDirectory && a.brokers == b.brokers && a.maxMessageBytes == b.maxMessageBytes
            && a.topicPrefix == b.topicPrefix && a.kafkaConfigFile == b.kafkaConfigFile
            && a.uid == b.uid && a.gid == b.gid && a.mode == b.mode
            && a.maxDeliveries == b.maxDeliveries && a.deadLetterSuffix == b.deadLetterSuffix && a.groupTimeout == b.groupTimeout
            && a.retention == b.retention && a.metricsAddress == b.metricsAddress
            && a.busyPollMicroseconds == b.busyPollMicroseconds
            && a.fuse == b.fuse && a.kafka.map { "\($0)=\($1)" } == b.kafka.map { "\($0)=\($1)" }
    }

    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    /// Options mount(8) and fstab use for their own purposes; a FUSE daemon ignores them.
    static let mountOnly: Set<String> = [
        "rw", "defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser", "owner", "group",
        "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime", "noatime", "relatime", "norelatime",
        "strictatime", "diratime", "nodiratime", "async", "sync", "nosymfollow", "x-systemd.automount", "silent", "loud",
    ]
    /// Options passed to libfuse.
    static let fuseKnown: Set<String> = ["allow_other", "allow_root", "default_permissions", "auto_unmount"]

    /// Parses comma-separated option lists (several `-o` may be given).
    static func parse(_ lists: [String]) throws -> MountOptions {
        var result = MountOptions()
        for list in lists {
            for item in list.split(separator: ",", omittingEmptySubsequences: true).map(String.init) {
                let (key, value): (String, String?) = {
                    if let eq = item.firstIndex(of: "=") { return (String(item[..<eq]), String(item[item.index(after: eq)...])) }
                    return (item, nil)
                }()
                switch key {
                case "data_dir", "data-dir":
                    guard let value, !value.isEmpty else { throw Invalid(description: "option \(key) needs a value") }
                    result.dataDirectory = value
                case "brokers":
                    guard let value, !value.isEmpty else { throw Invalid(description: "option brokers needs a value") }
                    result.brokers = value
                case "max_message", "max_message_bytes":
                    guard let value, let n = Int(value), n > 0 else {
                        throw Invalid(description: "option \(key) needs a positive number of bytes")
                    }
                    result.maxMessageBytes = n
                case "topic_prefix":
                    result.topicPrefix = value ?? ""
                case "kafka_config":
                    guard let value, !value.isEmpty else { throw Invalid(description: "option kafka_config needs a file") }
                    result.kafkaConfigFile = value
                case "uid", "gid":
                    guard let value, let id = UInt32(value), id != UInt32.max else {
                        throw Invalid(description: "option \(key) needs a numeric id")
                    }
                    if key == "uid" { result.uid = id } else { result.gid = id }
                case "mode":
                    guard let value, let bits = UInt32(value, radix: 8), bits <= 0o777 else {
                        throw Invalid(description: "option mode needs octal permission bits such as 0660")
                    }
                    result.mode = bits
                case "max_deliveries":
                    guard let value, let n = Int(value), n > 0 else {
                        throw Invalid(description: "option max_deliveries needs a positive number")
                    }
                    result.maxDeliveries = n
                case "dead_letter_suffix":
                    guard let value, !value.isEmpty, value.allSatisfy(PipeName.isAllowed) else {
                        throw Invalid(description: "option dead_letter_suffix needs characters allowed in pipe names")
                    }
                    result.deadLetterSuffix = value
                case "group_timeout":
                    guard let value, let seconds = Double(value.hasSuffix("s") ? String(value.dropLast()) : value),
                          seconds >= 1, seconds <= 3600 else {
                        throw Invalid(description: "option group_timeout needs seconds, from 1 to 3600")
                    }
                    result.groupTimeout = seconds
                case "retention":
                    do { result.retention = try Retention(parsing: value ?? "") } catch {
                        throw Invalid(description: "option retention: \(error)")
                    }
                case "metrics_address":
                    guard let value, !value.isEmpty else { throw Invalid(description: "option metrics_address needs HOST:PORT") }
                    result.metricsAddress = value
                case "busy_poll_us":
                    guard let value, let us = UInt32(value), us <= 1000 else {
                        throw Invalid(description: "option busy_poll_us needs microseconds, from 0 to 1000")
                    }
                    result.busyPollMicroseconds = us
                case "ro":
                    throw Invalid(description: "option ro is not supported: a pipe directory is written to by design")
                case _ where key.hasPrefix("kafka."):
                    guard let value else { throw Invalid(description: "option \(key) needs a value") }
                    result.kafka.append((String(key.dropFirst("kafka.".count)), value))
                case _ where mountOnly.contains(key) || key.hasPrefix("x-") || key.hasPrefix("comment="):
                    continue
                case _ where fuseKnown.contains(key) && value == nil:
                    if !result.fuse.contains(key) { result.fuse.append(key) }
                default:
                    throw Invalid(description: "unknown mount option '\(item)'")
                }
            }
        }
        // With other users allowed in, the kernel must check file modes: without default_permissions a
        // FUSE file system lets every allowed user do everything.
        if result.fuse.contains("allow_other") && !result.fuse.contains("default_permissions") {
            result.fuse.append("default_permissions")
        }
        return result
    }
}
