import Foundation
import DNPipesCore

/// Node ids. Fixed ones for the root and the two view directories; every pipe name gets an id the first time
/// it is seen, kept for the life of the mount, from which the ids of the pipe and its two views derive.
/// Names map to ids without any reference counting, so `forget` needs no bookkeeping.
// @unchecked Sendable: the maps are guarded by `lock`.
final class Inodes: @unchecked Sendable {
    static let root: UInt64 = 1
    static let drainDirectory: UInt64 = 2
    static let tailDirectory: UInt64 = 3
    /// `.group/` and `.take/`: consumer groups, read as loop workers or as one-shot takers.
    /// (Pipes' ids count up from 4; these sit just below the group ids.)
    static let groupDirectory: UInt64 = groupBase - 2
    static let takeDirectory: UInt64 = groupBase - 1
    /// Ids of group directories and of pipes seen through a group start here.
    static let groupBase: UInt64 = 1 << 61
    /// Ids handed out for the FIFO-typed entry that answers `mkfifo` (see `PipeFileSystem.mknod`).
    static let fifoBase: UInt64 = 1 << 62

    enum Node: Equatable {
        case root
        case directory(View)
        case pipe(PipeName, View)
        case fifoAlias(PipeName)
        /// `.group/` or `.take/`.
        case groups(GroupView)
        /// `.group/GROUP/`.
        case group(PipeName, GroupView)
        /// `.group/GROUP/PIPE`.
        case member(group: PipeName, pipe: PipeName, GroupView)
    }

    enum GroupView: Hashable {
        /// `.group/`: a message is done when its reader reads again (at least once).
        case loop
        /// `.take/`: a message is done once it is read (at most once).
        case take
    }

    private enum GroupKey: Hashable {
        case group(PipeName, GroupView)
        case member(PipeName, PipeName, GroupView)
    }

    enum View: UInt64 {
        /// The pipe itself: reads from the oldest message and blocks at the end.
        case pipe = 0
        /// `.drain/NAME`: reads up to the end as it was at open, then end-of-file.
        case drain = 1
        /// `.tail/NAME`: starts at the end and sees only new messages.
        case tail = 2
    }

    private let lock = NSLock()
    private var ids: [PipeName: UInt64] = [:]
    private var names: [UInt64: PipeName] = [:]
    private var aliases: [UInt64: PipeName] = [:]
    private var nextAlias = fifoBase
    private var groupIDs: [GroupKey: UInt64] = [:]
    private var groupKeys: [UInt64: GroupKey] = [:]

    func ino(ofGroup group: PipeName, view: GroupView) -> UInt64 { groupID(.group(group, view)) }
    func ino(ofMember group: PipeName, pipe: PipeName, view: GroupView) -> UInt64 { groupID(.member(group, pipe, view)) }

    private func groupID(_ key: GroupKey) -> UInt64 {
        lock.lock(); defer { lock.unlock() }
        if let known = groupIDs[key] { return known }
        let id = Inodes.groupBase + UInt64(groupIDs.count)
        groupIDs[key] = id
        groupKeys[id] = key
        return id
    }

    func ino(of name: PipeName, view: View) -> UInt64 {
        lock.lock(); defer { lock.unlock() }
        let id: UInt64
        if let known = ids[name] {
            id = known
        } else {
            id = UInt64(ids.count + 1)
            ids[name] = id
            names[id] = name
        }
        return id << 2 | view.rawValue
    }

    /// A fresh node id for one `mkfifo` answer; forgotten when the kernel forgets it.
    func fifoAlias(for name: PipeName) -> UInt64 {
        lock.lock(); defer { lock.unlock() }
        nextAlias += 1
        aliases[nextAlias] = name
        return nextAlias
    }

    func forget(_ ino: UInt64) {
        guard ino >= Inodes.fifoBase else { return }
        lock.lock(); defer { lock.unlock() }
        aliases[ino] = nil
    }

    func node(_ ino: UInt64) -> Node? {
        switch ino {
        case Inodes.root: return .root
        case Inodes.drainDirectory: return .directory(.drain)
        case Inodes.tailDirectory: return .directory(.tail)
        case Inodes.groupDirectory: return .groups(.loop)
        case Inodes.takeDirectory: return .groups(.take)
        default: break
        }
        lock.lock(); defer { lock.unlock() }
        if ino >= Inodes.fifoBase { return aliases[ino].map { .fifoAlias($0) } }
        if ino >= Inodes.groupBase {
            switch groupKeys[ino] {
            case .group(let g, let v): return .group(g, v)
            case .member(let g, let p, let v): return .member(group: g, pipe: p, v)
            case nil: return nil
            }
        }
        guard let view = View(rawValue: ino & 3), let name = names[ino >> 2] else { return nil }
        return .pipe(name, view)
    }
}
