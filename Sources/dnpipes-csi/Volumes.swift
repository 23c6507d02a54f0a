import Foundation
import GRPCCore
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The published volumes of this node. Each is a `dnpipes mount` daemon at the pod's target path, started
/// in a session of its own (by `dnpipes mount`), so it is no child of the plugin and outlives it; what is
/// needed to find and unmount it again is recorded in the state directory, one directory per target path
/// (`volume.json`, and `kafka.properties` and PEM files when the volume has settings or secrets).
///
/// Operations on one target path never overlap (a second gets ABORTED, as CSI asks); those on different
/// paths run side by side, since the actor is free while a mount command runs.
actor Volumes {
    let stateDirectory: String
    let dnpipes: String
    let logger: Logger
    private var busy: Set<String> = []
    private var adopted = false

    init(stateDirectory: String, dnpipes: String, logger: Logger) throws {
        self.stateDirectory = stateDirectory
        self.dnpipes = dnpipes
        self.logger = logger
        try FileManager.default.createDirectory(atPath: stateDirectory + "/volumes", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        chmod(stateDirectory, 0o700)
    }

    /// Ready to mount: the earlier volumes are adopted, the FUSE device opens, dnpipes and the state
    /// directory are there.
    func canMount() -> Bool {
        adopted && MountPoint.canOpenFUSE() && FileManager.default.isExecutableFile(atPath: dnpipes)
            && access(stateDirectory + "/volumes", W_OK) == 0
    }

    /// Takes over the volumes an earlier run published: live mounts are kept as they are; a mount whose
    /// daemon died (ENOTCONN) is detached, so that the path is a plain directory again and kubelet's
    /// unpublish (or a new publish) finds it in order. Records stay until their volume is unpublished.
    func adopt() {
        for (key, record) in records() {
            let target = record.targetPath
            switch MountPoint.state(of: target) {
            case .live:
                logger.info("adopted live volume", metadata: ["volume": "\(record.volumeID)", "target": "\(target)"])
            case .dead:
                do {
                    try MountPoint.detach(target)
                    logger.warning("cleaned up a dead mount (its daemon is gone)", metadata: ["volume": "\(record.volumeID)", "target": "\(target)"])
                } catch {
                    logger.error("cannot clean up a dead mount: \(error)", metadata: ["target": "\(target)"])
                }
            case .none:
                logger.info("volume no longer mounted", metadata: ["volume": "\(record.volumeID)", "target": "\(target)", "record": "\(key)"])
            case .other(let type):
                logger.warning("target has another file system mounted", metadata: ["target": "\(target)", "type": "\(type)"])
            }
        }
        adopted = true
    }

    func publish(_ spec: VolumeSpec, secrets: VolumeSecrets) async throws {
        let target = spec.targetPath
        guard busy.insert(target).inserted else {
            throw RPCError(code: .aborted, message: "an operation on \(target) is in progress")
        }
        defer { busy.remove(target) }
        let meta: Logger.Metadata = ["volume": "\(spec.volumeID)", "target": "\(target)"]

        switch MountPoint.state(of: target) {
        case .live:
            // Publishing again what is published is success; something else at the same path is not.
            if let record = record(for: target), record == spec { return }
            logger.warning("NodePublishVolume refused: target already published with other settings", metadata: meta)
            throw RPCError(code: .alreadyExists, message: "\(target) is already published with another volume or other settings")
        case .dead:
            try? MountPoint.detach(target)
        case .other(let type):
            throw RPCError(code: .failedPrecondition, message: "\(target) has a \(type) file system mounted")
        case .none:
            break
        }

        let directory = stateDirectory + "/volumes/" + Self.key(for: target)
        var created = false
        do {
            if !FileManager.default.fileExists(atPath: target) {
                try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
                created = true
            }
            try? FileManager.default.removeItem(atPath: directory)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw RPCError(code: .internalError, message: "cannot prepare \(target): \(error)")
        }
        func undo() {
            try? FileManager.default.removeItem(atPath: directory)
            if created { rmdir(target) }
        }

        let arguments: [String]
        do { arguments = try mountArguments(spec, secrets: secrets, directory: directory) } catch {
            undo()
            throw RPCError(code: .internalError, message: "cannot write the volume's settings: \(error)")
        }
        logger.info("mounting", metadata: meta.merging(["brokers": "\(spec.brokers ?? "embedded store")", "readonly": "\(spec.readonly)"]) { a, _ in a })
        let result = await Command.run(dnpipes, arguments, timeout: 120)
        guard result.status == 0 else {
            if MountPoint.state(of: target) != .none { try? MountPoint.detach(target) }
            undo()
            let reason = result.output.split(separator: "\n").filter { !$0.hasPrefix("%") }.suffix(3).joined(separator: "; ")
            logger.error("mount failed: \(reason)", metadata: meta)
            let unreachable = reason.contains("cannot reach the Kafka brokers")
            throw RPCError(code: unreachable ? .unavailable : .internalError, message: "mounting \(spec.volumeID) failed: \(reason)")
        }
        do {
            if spec.readonly { try MountPoint.makeReadOnly(target) }
            try JSONEncoder().encode(spec).write(to: URL(fileURLWithPath: directory + "/volume.json"))
        } catch {
            _ = await Command.run(dnpipes, ["unmount", target], timeout: 60)
            undo()
            logger.error("mount could not be finished: \(error)", metadata: meta)
            throw RPCError(code: .internalError, message: "\(error)")
        }
        logger.info("published", metadata: meta)
    }

    func unpublish(volumeID: String, targetPath target: String) async throws {
        guard busy.insert(target).inserted else {
            throw RPCError(code: .aborted, message: "an operation on \(target) is in progress")
        }
        defer { busy.remove(target) }
        let meta: Logger.Metadata = ["volume": "\(volumeID)", "target": "\(target)"]
        switch MountPoint.state(of: target) {
        case .live:
            // Waits for the daemon to make everything durable and exit.
            let result = await Command.run(dnpipes, ["unmount", target], timeout: 60)
            if result.status != 0 {
                logger.error("unmount failed: \(result.output)", metadata: meta)
                throw RPCError(code: .internalError, message: "cannot unmount \(target): \(result.output)")
            }
        case .dead:
            do { try MountPoint.detach(target) } catch {
                throw RPCError(code: .internalError, message: "\(error)")
            }
        case .other(let type):
            throw RPCError(code: .failedPrecondition, message: "\(target) has a \(type) file system mounted, not dnpipes")
        case .none:
            break
        }
        if rmdir(target) != 0 && errno != ENOENT {
            throw RPCError(code: .internalError, message: "\(SystemError("cannot remove \(target)", errno))")
        }
        try? FileManager.default.removeItem(atPath: stateDirectory + "/volumes/" + Self.key(for: target))
        logger.info("unpublished", metadata: meta)
    }

    /// The `dnpipes mount` command line, with settings and secrets in files of the volume's directory.
    private func mountArguments(_ spec: VolumeSpec, secrets: VolumeSecrets, directory: String) throws -> [String] {
        var options = ["allow_other", "mode=" + String(spec.mode, radix: 8)]
        if let uid = spec.uid { options.append("uid=\(uid)") }
        if let gid = spec.gid { options.append("gid=\(gid)") }
        var arguments = ["mount", spec.targetPath, "--data-dir", directory + "/data", "--log-file", directory + "/dnpipes.log"]
        if let brokers = spec.brokers {
            arguments += ["--brokers", brokers]
            if let prefix = spec.topicPrefix { arguments += ["--topic-prefix", prefix] }
            var properties = spec.kafka.merging(secrets.properties) { _, secret in secret }
            for (name, pem) in secrets.pemFiles {
                let file = directory + "/" + name
                try write(pem, to: file)
                properties[VolumeSecrets.pemLocations[name]!] = file
            }
            if !properties.isEmpty {
                let file = directory + "/kafka.properties"
                try write(properties.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)\n" }.joined(), to: file)
                arguments += ["--kafka-config", file]
            }
        }
        if let maxMessageBytes = spec.maxMessageBytes { arguments += ["--max-message-bytes", String(maxMessageBytes)] }
        return arguments + ["-o", (options + spec.mountFlags).joined(separator: ",")]
    }

    /// Writes a file only its owner can read, created so from the start.
    private func write(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("cannot create \(path)", errno) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw SystemError("cannot write \(path)", errno)
        }
    }

    private func record(for target: String) -> VolumeSpec? {
        let path = stateDirectory + "/volumes/" + Self.key(for: target) + "/volume.json"
        return (try? Data(contentsOf: URL(fileURLWithPath: path))).flatMap { try? JSONDecoder().decode(VolumeSpec.self, from: $0) }
    }

    private func records() -> [(String, VolumeSpec)] {
        let keys = (try? FileManager.default.contentsOfDirectory(atPath: stateDirectory + "/volumes")) ?? []
        return keys.sorted().compactMap { key in
            let path = stateDirectory + "/volumes/" + key + "/volume.json"
            guard let data = try? Data(contentsOf: URL(fileURLWithPath: path)),
                  let spec = try? JSONDecoder().decode(VolumeSpec.self, from: data) else { return nil }
            return (key, spec)
        }
    }

    /// A directory name for a target path: FNV-1a, 64 bits (the record inside names the path).
    static func key(for target: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in target.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return String(hash, radix: 16)
    }
}
