import Foundation
import Logging
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// Directory listings.
///
/// An open directory keeps the listing its first readdir took (as libfuse's passthrough_ll keeps its
/// directory stream), so a pipe made or deleted between two readdir batches is neither skipped nor
/// repeated: readdir's offsets are positions in that listing. A readdir from offset 0 (the first, or a
/// rewinddir) lists again. The view directories are hidden from the root listing (like dot files they
/// are there for those who know), and list every pipe themselves.
extension PipeFileSystem {
    public func opendir(_ reply: Reply<OpenedFile>, ino: UInt64) {
        switch inodes.node(ino) {
        case .root, .directory, .groups, .group: break
        case nil: return reply.fail(ENOENT)
        default: return reply.fail(ENOTDIR)
        }
        let fh = listings.withLock { state -> UInt64 in
            state.next += 1
            state.open[state.next] = (ino, [])
            return state.next
        }
        reply.send(OpenedFile(fh: fh))
    }

    public func releasedir(_ reply: Reply<Done>, fh: UInt64) {
        listings.withLock { _ = $0.open.removeValue(forKey: fh) }
        reply.ok()
    }

    /// The listing of directory `ino` now; each entry's `next` is its position plus one.
    private func listing(of ino: UInt64) throws -> [DirectoryEntry] {
        var entries: [(String, UInt64, mode_t)] = [(".", ino, S_IFDIR), ("..", Inodes.root, S_IFDIR)]
        switch inodes.node(ino) {
        case .groups(let view):
            for g in try groups.list() { entries.append((g.value, inodes.ino(ofGroup: g, view: view), S_IFDIR)) }
        case .group(let group, let view):
            for p in try store.list() where !GroupJournal.isJournal(p) {
                entries.append((p.value, inodes.ino(ofMember: group, pipe: p, view: view), S_IFREG))
            }
        default:
            let view: Inodes.View
            if case .directory(let v) = inodes.node(ino) { view = v } else { view = .pipe }
            for p in try store.list() where !GroupJournal.isJournal(p) { entries.append((p.value, inodes.ino(of: p, view: view), S_IFREG)) }
        }
        return entries.enumerated().map { DirectoryEntry(name: $1.0, ino: $1.1, type: $1.2, next: $0 + 1) }
    }

    /// The entries of open directory `fh` from position `offset` on: the caller takes as many as fit and
    /// asks again from the `next` of the last one it took.
    public func readdir(_ reply: Reply<ArraySlice<DirectoryEntry>>, fh: UInt64, offset: Int) {
        guard let open = listings.withLock({ $0.open[fh] }) else { return reply.fail(EBADF) }
        var entries = open.entries
        if offset == 0 {
            do { entries = try listing(of: open.ino) } catch {
                logger.error("listing pipes failed", metadata: ["op": "readdir", "error": "\(error)"])
                return reply.fail(EIO)
            }
            listings.withLock { $0.open[fh]?.entries = entries }
        }
        reply.send(entries[min(max(offset, 0), entries.count)...])
    }
}
