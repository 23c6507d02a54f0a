#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation
import Logging
import DNPipesCore

/// Retention on the embedded store: a pipe's `retention` file holds its value (`7d`, or no file for none).
///
/// Readers skip expired messages at once: the oldest offset a fetch, a poll or `bounds()` sees is the first
/// message not expired (`MessageAges`, checked under the log's lock, without reading any record). The disk
/// is freed a whole segment at a time (`dropExpiredSegments`, once a second): a segment goes once every
/// message in it has expired, and an active segment holding expired messages is closed first, so that a
/// quiet pipe frees its disk too. The start offset moves past expired messages, as a reset moves it past
/// all of them, and may then lie inside a segment.
extension EmbeddedLog: RetainedCounting {
    static let retentionFile = "retention"

    /// The retention recorded in a pipe's directory; none when there is no file or it cannot be read.
    static func readRetention(_ directory: String) -> Retention {
        guard let text = try? String(contentsOfFile: directory + "/" + retentionFile, encoding: .utf8),
              let retention = try? Retention(parsing: text) else { return .none }
        return retention
    }

    /// Records `retention` in a new pipe's directory (the mount's default for new pipes).
    static func writeRetention(_ retention: Retention, directory: String) throws {
        guard retention != .none else { return }
        let fd = try systemCall("open \(directory)") { Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        try replaceFile(retentionFile, in: fd, directory: directory, text: "\(retention)\n")
    }

    /// The oldest offset a reader gets: the start, or the first message not expired. Called under `lock`.
    func oldestKept() -> Int64 {
        ages.retention.seconds == nil ? start : ages.firstKept(oldest: start, end: end, nowMillis: currentMillis())
    }

    var retention: Retention {
        lock.lock(); defer { lock.unlock() }
        return ages.retention
    }

    /// Writes the pipe's retention file, then applies it (on the sync queue, in order with resets).
    func setRetention(_ retention: Retention, completion: @escaping @Sendable (Error?) -> Void) {
        syncQueue.async { [self] in
            do {
                if isRemoved { throw PipeError.removed(name) }
                try withDirectory { directoryFD in
                    if retention == .none {
                        if unlinkat(directoryFD, EmbeddedLog.retentionFile, 0) != 0 && errno != ENOENT {
                            throw SystemError(what: "remove \(directory)/\(EmbeddedLog.retentionFile)", code: errno)
                        }
                        try systemCall("fsync \(directory)") { fsync(directoryFD) }
                    } else {
                        try EmbeddedLog.replaceFile(EmbeddedLog.retentionFile, in: directoryFD, directory: directory,
                                                    text: "\(retention)\n")
                    }
                }
                lock.lock()
                ages.retention = retention
                lock.unlock()
                // Parked readers and pollers look again: what they waited behind may be gone now.
                notifyObservers()
                completion(nil)
            } catch {
                completion(error)
            }
        }
    }

    /// What the pipe retains now: messages and their bytes (framed, as a reader gets them) from the oldest
    /// kept offset to the end.
    func retained() -> (messages: Int64, bytes: Int64, oldest: Int64, end: Int64) {
        lock.lock(); defer { lock.unlock() }
        let oldest = oldestKept()
        let below = oldest == index.origin ? 0 : ages.byte(at: oldest) ?? 0
        return (end - oldest, max(0, index.size - below), oldest, end)
    }

    /// Moves the start past expired messages and frees their disk a whole segment at a time, without reading
    /// a record: segments whose every message has expired are unlinked after the new start offset is written;
    /// an active segment holding an expired message is closed (a new one takes the next pushes), so it goes
    /// once the rest of it expires. The start file is written whenever segments go, else at most every ten
    /// seconds, so that after a restart expired messages stay gone (the times of pushes are then known only
    /// from segment mtimes). Runs on the sync queue, in order with resets and syncs.
    func dropExpiredSegments(logger: Logger) {
        lock.lock()
        guard !removed, ages.retention.seconds != nil else { lock.unlock(); return }
        let kept = oldestKept()
        guard kept > start else { lock.unlock(); return }
        if let active = segments.last, active.count > 0, active.base < kept {
            guard let fresh = try? Segment.create(directory: directory, base: end) else {
                lock.unlock()
                return logger.warning("cannot start a new segment to free expired messages; trying again in a second",
                                      metadata: ["pipe": "\(name)", "op": "expire"])
            }
            segments.append(fresh)
            directoryUnsynced = true
        }
        var dropped: [Segment] = []
        while segments.count > 1 && segments[1].base <= kept {
            let segment = segments.removeFirst()
            unsynced[ObjectIdentifier(segment)] = nil
            dropped.append(segment)
        }
        let byte = kept == end ? index.size : ages.byte(at: kept) ?? index.size
        start = kept
        ages.rebase(at: kept, byte: byte)
        let now = DispatchTime.now().uptimeNanoseconds
        let writeStart = !dropped.isEmpty || now - expiryWroteStart >= 10_000_000_000
        if writeStart { expiryWroteStart = now }
        lock.unlock()
        guard writeStart else { return }
        // Durable order as for a reset: the new start offset first, then the files go; a crash in between
        // leaves files that the next open deletes.
        do { try writeStartFile(kept) } catch {
            return logger.error("expired messages are skipped but their segments stay on disk",
                                metadata: ["pipe": "\(name)", "op": "expire", "offset": "\(kept)", "error": "\(error)"])
        }
        try? withDirectory { dir in for segment in dropped { unlinkat(dir, Segment.fileName(base: segment.base), 0) } }
        if !dropped.isEmpty {
            logger.info("expired segments removed", metadata: ["pipe": "\(name)", "op": "expire", "segments": "\(dropped.count)",
                                                               "bytes": "\(dropped.reduce(0) { $0 + $1.size })", "oldest": "\(kept)"])
        }
    }

    /// Replaces `file` in the directory `dirFD` durably: a temporary file, fsync'ed, renamed over it.
    static func replaceFile(_ file: String, in dirFD: Int32, directory: String, text: String) throws {
        let tmp = file + ".tmp"
        let fd = try systemCall("create \(directory)/\(tmp)") { openat(dirFD, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let written = try bytes.withUnsafeBytes { raw in try systemCall("write \(directory)/\(tmp)") { write(fd, raw.baseAddress, raw.count) } }
        if written != bytes.count { throw SystemError(what: "write \(directory)/\(tmp)", code: EIO) }
        try systemCall("fsync \(directory)/\(tmp)") { fsync(fd) }
        try systemCall("rename \(directory)/\(tmp)") { renameat(dirFD, tmp, dirFD, file) }
        try systemCall("fsync \(directory)") { fsync(dirFD) }
    }
}

extension MessageAges {
    /// A segment found at open: its messages from `start` on count as pushed when the file was last written.
    mutating func noteSegment(_ segment: Segment, from start: Int64, byte: Int64) {
        guard segment.count > 0, segment.base + segment.count > start else { return }
        guard let st = try? segment.status() else { return }
        let millis = Int64(st.st_mtim.tv_sec) * 1000 + Int64(st.st_mtim.tv_nsec) / 1_000_000
        note(offset: max(segment.base, start), millis: millis, byte: byte)
    }
}
