#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The open segment files of every pipe, at most `capacity` at a time, so that a daemon's descriptors stay
/// bounded however many pipes it serves: a segment opens its file when it is read or written and the least
/// recently used files are closed once more are open.
///
/// A file is never closed while it is in use, nor while it holds writes not yet synced: Linux reports a
/// writeback error only to descriptors open when it happened, so closing such a file could hide a lost
/// write from the fdatasync that acknowledges it. The cache may then hold more than `capacity` for a moment.
// @unchecked Sendable: every slot's fields and `open` are guarded by `lock`.
final class DescriptorCache: @unchecked Sendable {
    /// The cache of the daemon's embedded store.
    static let shared = DescriptorCache(capacity: 256)

    /// One file's place in the cache.
    final class Slot: @unchecked Sendable {
        let path: String
        fileprivate var fd: Int32 = -1
        fileprivate var users = 0
        /// Writes since the last sync that covered them.
        fileprivate var unsynced = 0
        fileprivate var lastUse: UInt64 = 0
        fileprivate var closed = false
        init(path: String) { self.path = path }
    }

    private let lock = NSLock()
    var capacity: Int {
        get { lock.withLock { limit } }
        set { lock.withLock { limit = max(8, newValue) } }
    }
    private var limit: Int
    private var open: [ObjectIdentifier: Slot] = [:]
    private var clock: UInt64 = 0

    init(capacity: Int) { limit = max(8, capacity) }

    /// Descriptors open now (for tests and metrics).
    var openCount: Int { lock.withLock { open.count } }
    func isOpen(_ slot: Slot) -> Bool { lock.withLock { slot.fd >= 0 } }

    /// Runs `body` with the file's descriptor, opening the file if it is not open. A file that is gone
    /// (a reset or retention unlinked it) throws `SegmentGone`.
    func use<T>(_ slot: Slot, _ body: (Int32) throws -> T) throws -> T {
        var fd: Int32 = lock.withLock {
            slot.users += 1
            clock += 1
            slot.lastUse = clock
            return slot.fd
        }
        defer { lock.withLock { slot.users -= 1 } }
        if fd < 0 {
            let opened: Int32
            do { opened = try systemCall("open segment \(slot.path)") { Glibc.open(slot.path, O_RDWR | O_CLOEXEC) } } catch let error as SystemError where error.code == ENOENT {
                throw SegmentGone(path: slot.path)
            }
            var spare: Int32 = -1
            var victims: [Int32] = []
            lock.withLock {
                if slot.fd >= 0 || slot.closed {
                    spare = opened            // another user opened it meanwhile, or it was closed for good
                } else {
                    slot.fd = opened
                    open[ObjectIdentifier(slot)] = slot
                    victims = evict()
                }
                fd = slot.fd >= 0 ? slot.fd : opened
            }
            victims.forEach { _ = Glibc.close($0) }
            if spare >= 0 && spare != fd { _ = Glibc.close(spare) }
            if slot.closed && fd == opened {
                // Closed for good while this open was under way: use it once, then close it.
                defer { _ = Glibc.close(opened) }
                return try body(opened)
            }
        }
        return try body(fd)
    }

    /// Notes a write through the slot's descriptor: it stays open until a sync covers it.
    func wrote(_ slot: Slot) { lock.withLock { slot.unsynced += 1 } }

    /// Syncs the file; the writes made before it no longer keep it open.
    func sync(_ slot: Slot) throws {
        let before = lock.withLock { slot.unsynced }
        _ = try use(slot) { fd in try systemCall("fdatasync \(slot.path)") { fdatasync(fd) } }
        lock.withLock { slot.unsynced -= before }
    }

    /// The segment is gone or the log closed: its descriptor is closed once nobody uses it.
    func close(_ slot: Slot) {
        let fd: Int32 = lock.withLock {
            slot.closed = true
            open[ObjectIdentifier(slot)] = nil
            guard slot.users == 0 else { return -1 }   // the user's own close below takes care of it
            defer { slot.fd = -1 }
            return slot.fd
        }
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    /// Picks the least recently used idle files beyond the capacity and forgets their descriptors; the
    /// caller closes them after the lock is released. Under `lock`.
    private func evict() -> [Int32] {
        guard open.count > limit else { return [] }
        let idle = open.values.filter { $0.users == 0 && $0.unsynced == 0 }.sorted { $0.lastUse < $1.lastUse }
        var victims: [Int32] = []
        for slot in idle.prefix(open.count - limit) {
            victims.append(slot.fd)
            slot.fd = -1
            open[ObjectIdentifier(slot)] = nil
        }
        return victims
    }
}

/// A segment whose file was unlinked (by a reset or retention) while a reader still had it.
struct SegmentGone: Error, CustomStringConvertible {
    let path: String
    var description: String { "segment \(path) was removed" }
}
