import Foundation

/// What a publish request asks for, checked: everything needed to mount the volume except its secrets,
/// so that it can be recorded on disk and compared with a repeated request.
struct VolumeSpec: Codable, Equatable {
    var volumeID: String
    var targetPath: String
    var readonly: Bool
    /// Kafka bootstrap brokers; nil for the embedded store (pipes on this node only).
    var brokers: String?
    var topicPrefix: String?
    var maxMessageBytes: Int?
    /// Owner and permission bits of the pipes (see `parse` for the defaults).
    var uid: UInt32?
    var gid: UInt32?
    var mode: UInt32
    /// librdkafka settings from the volume context (`kafka.NAME`), never secret ones.
    var kafka: [String: String]
    /// The volume's mountOptions, passed on to `dnpipes mount -o`.
    var mountFlags: [String]

    struct Invalid: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// Volume context keys kubelet adds itself (podInfoOnMount, ephemeral volumes); not settings.
    static let kubeletPrefix = "csi.storage.k8s.io/"

    static func parse(_ request: Csi_V1_NodePublishVolumeRequest) throws -> (VolumeSpec, VolumeSecrets) {
        guard !request.volumeID.isEmpty else { throw Invalid("volume_id is missing") }
        guard !request.targetPath.isEmpty else { throw Invalid("target_path is missing") }
        guard request.targetPath.hasPrefix("/") else { throw Invalid("target_path must be absolute") }
        guard request.hasVolumeCapability else { throw Invalid("volume_capability is missing") }
        let capability = request.volumeCapability
        guard request.volumeCapability.hasAccessMode, capability.accessMode.mode != .unknown else {
            throw Invalid("volume_capability.access_mode is missing")
        }
        guard case .mount(let mount)? = capability.accessType else {
            throw Invalid("volume_capability must be a mount volume (dnpipes has no block volumes)")
        }
        guard mount.fsType.isEmpty || mount.fsType == "dnpipes" else {
            throw Invalid("fs_type \(mount.fsType) is not dnpipes")
        }
        let readonly = request.readonly || capability.accessMode.mode == .singleNodeReaderOnly
            || capability.accessMode.mode == .multiNodeReaderOnly

        var spec = VolumeSpec(volumeID: request.volumeID, targetPath: request.targetPath, readonly: readonly,
                              brokers: nil, topicPrefix: nil, maxMessageBytes: nil, uid: nil, gid: nil, mode: 0,
                              kafka: [:], mountFlags: mount.mountFlags)
        var mode: UInt32?
        for (key, value) in request.volumeContext.sorted(by: { $0.key < $1.key }) {
            switch key {
            case "brokers":
                guard !value.isEmpty, !value.contains(where: \.isWhitespace) else { throw Invalid("brokers must be HOST:PORT,... without spaces") }
                spec.brokers = value
            case "topicPrefix":
                spec.topicPrefix = value
            case "maxMessageBytes":
                guard let n = Int(value), n > 0 else { throw Invalid("maxMessageBytes must be a positive number") }
                spec.maxMessageBytes = n
            case "uid", "gid":
                guard let id = UInt32(value), id != UInt32.max else { throw Invalid("\(key) must be a numeric id") }
                if key == "uid" { spec.uid = id } else { spec.gid = id }
            case "mode":
                guard let bits = UInt32(value, radix: 8), bits <= 0o777 else { throw Invalid("mode must be octal permission bits such as 0660") }
                mode = bits
            case _ where key.hasPrefix("kafka."):
                let name = String(key.dropFirst("kafka.".count))
                guard !name.isEmpty else { throw Invalid("volume attribute kafka. names no setting") }
                if isSecret(name) {
                    throw Invalid("\(key) is a secret: give it in the volume's secret (nodePublishSecretRef), not in its attributes")
                }
                try checkLine(name, value)
                spec.kafka[name] = value
            case _ where key.hasPrefix(kubeletPrefix):
                continue
            default:
                throw Invalid("unknown volume attribute \(key) (brokers, topicPrefix, maxMessageBytes, uid, gid, mode, kafka.NAME)")
            }
        }
        // kubelet's fsGroup (VOLUME_MOUNT_GROUP) wins over a gid attribute: it is what the pod's processes have.
        if !mount.volumeMountGroup.isEmpty {
            guard let gid = UInt32(mount.volumeMountGroup), gid != UInt32.max else {
                throw Invalid("volume_mount_group must be a numeric group id")
            }
            spec.gid = gid
        }
        // With a group, its members (the pod's fsGroup) read and write; without one, every user in the pod
        // does, since the pod's user is not known here (the volume is visible in this pod only).
        spec.mode = mode ?? (spec.gid != nil ? 0o660 : 0o666)
        if spec.brokers == nil && (spec.topicPrefix != nil || !spec.kafka.isEmpty || !request.secrets.isEmpty) {
            throw Invalid("topicPrefix, kafka.* settings and secrets need brokers")
        }
        for flag in mount.mountFlags where flag.contains(",") || flag.isEmpty {
            throw Invalid("mount flag '\(flag)' must be one option")
        }
        return (spec, try VolumeSecrets(request.secrets))
    }

    /// Whether a librdkafka setting holds a secret (the rule dnpipes itself applies to its config files).
    static func isSecret(_ name: String) -> Bool {
        let k = name.lowercased()
        return k.contains("password") || k.contains("secret") || k.hasSuffix(".pem") || k == "sasl.oauthbearer.config"
    }

    /// A properties file holds one `name=value` per line.
    static func checkLine(_ name: String, _ value: String) throws {
        guard !name.contains(where: { $0 == "=" || $0.isNewline || $0.isWhitespace }) else {
            throw Invalid("'\(name)' is not a librdkafka setting name")
        }
        guard !value.contains(where: \.isNewline) else { throw Invalid("the value of \(name) must be one line") }
    }
}

/// The request's secrets (nodePublishSecretRef): librdkafka settings by name (`sasl.password`, or with a
/// `kafka.` prefix), and PEM contents (`ssl.key.pem`, `ssl.certificate.pem`, `ssl.ca.pem`), which go to files
/// of their own since they span lines. Never logged, never on a command line: written to files only root
/// can read, in the volume's state directory, which unpublish removes.
struct VolumeSecrets {
    var properties: [String: String] = [:]
    var pemFiles: [String: String] = [:]

    /// The PEM settings and the file setting librdkafka reads each from.
    static let pemLocations = ["ssl.key.pem": "ssl.key.location", "ssl.certificate.pem": "ssl.certificate.location",
                               "ssl.ca.pem": "ssl.ca.location"]

    init(_ secrets: [String: String]) throws {
        for (key, value) in secrets {
            let name = key.hasPrefix("kafka.") ? String(key.dropFirst("kafka.".count)) : key
            if Self.pemLocations[name] != nil {
                pemFiles[name] = value
            } else {
                try VolumeSpec.checkLine(name, value)
                properties[name] = value
            }
        }
    }
}
