#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation
import Logging
import DNPipesCore

/// The embedded durable store: pipes as directories of append-only, checksummed segment files under one data
/// directory, which one daemon owns at a time (an exclusive lock on `DATA/lock`).
///
///     DATA/lock                  flock'ed by the owning daemon, holds its pid
///     DATA/pipes/NAME/start      oldest readable offset (written by reset)
///     DATA/pipes/NAME/*.log      segments, named by base offset: batches of messages (`BatchFormat`)
///     DATA/trash/                deleted pipes on their way out
///
/// Segment files are opened through one bounded cache (`DescriptorCache`, 256 files) and a pipe's directory
/// only while a reset or a retention change uses it, so the daemon's descriptors stay bounded however many
/// pipes it serves.
// @unchecked Sendable: `names`, `logs`, `opening`, `removals` and `trashCounter` are guarded by `lock`; the
// rest is set in init.
public final class EmbeddedStore: PipeStore, @unchecked Sendable {
    public struct Configuration: Sendable {
        public var maxMessageBytes: Int
        /// A segment is closed and a new one started once it grows past this size.
        public var segmentBytes: Int64
        /// The retention of pipes made from now on.
        public var defaultRetention: Retention
        public init(maxMessageBytes: Int = 1 << 20, segmentBytes: Int64 = 128 << 20, defaultRetention: Retention = .none) {
            self.maxMessageBytes = maxMessageBytes
            self.segmentBytes = segmentBytes
            self.defaultRetention = defaultRetention
        }
    }

    public struct AlreadyServed: Error, CustomStringConvertible {
        public let directory: String
        public let owner: String
        public var description: String {
            "data directory \(directory) is already served by another dnpipes daemon\(owner.isEmpty ? "" : " (pid \(owner))"); unmount that one first"
        }
    }

    public let directory: String
    private let config: Configuration
    let logger: Logger
    private let lockFD: Int32
    private let pipesDirectory: String
    private let trashDirectory: String
    private let syncQueue = DispatchQueue(label: "dnpipes.embedded.sync")
    /// Frees expired segments (see EmbeddedStore+Retention.swift).
    private var expiry: DispatchSourceTimer?

    let lock = NSLock()
    private var names: Set<PipeName> = []
    var logs: [PipeName: EmbeddedLog] = [:]
    private var trashCounter = 0
    /// Pipes whose log is being read for a first open (see `open`), and a count of deletions, by which an
    /// open tells that the pipe it read was deleted meanwhile.
    private var opening: [PipeName: DispatchGroup] = [:]
    private var removals = 0

    public init(directory: String, configuration: Configuration = Configuration(), logger: Logger) throws {
        self.directory = directory
        self.config = configuration
        self.logger = logger
        pipesDirectory = directory + "/pipes"
        trashDirectory = directory + "/trash"
        try FileManager.default.createDirectory(atPath: pipesDirectory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: trashDirectory, withIntermediateDirectories: true)

        let lockPath = directory + "/lock"
        lockFD = try systemCall("open \(lockPath)") { Glibc.open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }
        if flock(lockFD, LOCK_EX | LOCK_NB) != 0 {
            let owner = (try? String(contentsOfFile: lockPath, encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(lockFD)
            throw AlreadyServed(directory: directory, owner: owner)
        }
        _ = ftruncate(lockFD, 0)
        let pid = Array("\(getpid())\n".utf8)
        _ = pid.withUnsafeBytes { pwrite(lockFD, $0.baseAddress, $0.count, 0) }

        emptyTrash()
        for entry in try directoryEntries(pipesDirectory) {
            if let name = try? PipeName(validating: entry) {
                names.insert(name)
            } else {
                logger.warning("ignoring \(pipesDirectory)/\(entry): not a valid pipe name")
            }
        }
        logger.info("embedded store at \(directory): \(names.count) pipes")
        expiry = startExpiry(queue: syncQueue)
    }

    deinit { close(lockFD) }

    public func list() throws -> [PipeName] {
        lock.lock(); defer { lock.unlock() }
        return names.sorted()
    }

    public func contains(_ name: PipeName) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return names.contains(name)
    }

    @discardableResult
    public func create(_ name: PipeName) throws -> Bool {
        lock.lock(); defer { lock.unlock() }
        if names.contains(name) { return false }
        try EmbeddedLog.create(name: name, directory: path(of: name))
        // A group's journal keeps every entry: dropping old ones would forget done marks.
        try EmbeddedLog.writeRetention(GroupJournal.isJournal(name) ? .none : config.defaultRetention, directory: path(of: name))
        try EmbeddedLog.fsyncDirectory(pipesDirectory)
        names.insert(name)
        logger.info("created pipe \(name)")
        return true
    }

    public func remove(_ name: PipeName) throws {
        lock.lock()
        guard names.contains(name) else { lock.unlock(); throw PipeError.noSuchPipe(name) }
        trashCounter += 1
        removals += 1
        let target = "\(trashDirectory)/\(name).\(getpid()).\(trashCounter)"
        // The open log stops writing first, so nothing it does can land in a pipe re-created under the name.
        let log = logs.removeValue(forKey: name)
        log?.markRemoved()
        do {
            try systemCall("move \(path(of: name)) to the trash") { rename(path(of: name), target) }
        } catch {
            lock.unlock()
            throw error
        }
        try? EmbeddedLog.fsyncDirectory(pipesDirectory)
        names.remove(name)
        lock.unlock()
        logger.info("deleted pipe \(name)")
        syncQueue.async { try? FileManager.default.removeItem(atPath: target) }
    }

    public func openedLog(_ name: PipeName) -> PipeLog? {
        lock.lock(); defer { lock.unlock() }
        return logs[name]
    }

    /// Opens a pipe's log, reading and checking every segment the first time (which takes a while for a
    /// large pipe). That reading happens outside the store's lock, so lookups and opens of other pipes go on
    /// meanwhile; a second opener of the same pipe waits for the first (never on a FUSE thread: opens run
    /// on the filesystem's work queue).
    public func open(_ name: PipeName) throws -> PipeLog? {
        while true {
            lock.lock()
            if let log = logs[name] { lock.unlock(); return log }
            guard names.contains(name) else { lock.unlock(); return nil }
            if let busy = opening[name] {
                lock.unlock()
                busy.wait()
                continue
            }
            let done = DispatchGroup()
            done.enter()
            opening[name] = done
            let generation = removals
            lock.unlock()
            defer {
                lock.lock(); opening[name] = nil; lock.unlock()
                done.leave()
            }
            let logger = self.logger
            let log = try EmbeddedLog.open(name: name, directory: path(of: name), config: config, syncQueue: syncQueue) {
                logger.warning("\($0)")
            }
            lock.lock()
            // Deleted (and perhaps made again) while it was read: this log is of the deleted pipe.
            let current = removals == generation && names.contains(name)
            if current { logs[name] = log }
            lock.unlock()
            if !current { log.markRemoved(); continue }
            return log
        }
    }

    /// Waits for every pending sync, so that nothing written is left in the page cache alone.
    public func shutdown() {
        expiry?.cancel()
        lock.lock()
        let open = Array(logs.values)
        lock.unlock()
        let group = DispatchGroup()
        for log in open {
            group.enter()
            log.sync { _ in group.leave() }
        }
        group.wait()
        syncQueue.sync {}
    }

    private func path(of name: PipeName) -> String { pipesDirectory + "/" + name.value }

    private func emptyTrash() {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: trashDirectory)) ?? [] {
            try? FileManager.default.removeItem(atPath: trashDirectory + "/" + entry)
        }
    }
}
