import Foundation
import DNPipesCore

/// Node ids. Fixed ones for the root and the two view directories; every pipe name gets an id the first time
/// it is seen, kept for the life of the mount, from which the ids of the pipe and its two views derive.
/// Names map to ids without any reference counting, so `forget` needs no bookkeeping.
final class Inodes: Sendable {
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

    private struct Maps {
        var ids: [PipeName: UInt64] = [:]
        var names: [UInt64: PipeName] = [:]
        var aliases: [UInt64: PipeName] = [:]
        var nextAlias = Inodes.fifoBase
        var groupIDs: [GroupKey: UInt64] = [:]
        var groupKeys: [UInt64: GroupKey] = [:]
    }
    private let maps = LockedValue(Maps())

    func ino(ofGroup group: PipeName, view: GroupView) -> UInt64 { groupID(.group(group, view)) }
    func ino(ofMember group: PipeName, pipe: PipeName, view: GroupView) -> UInt64 { groupID(.member(group, pipe, view)) }

    private func groupID(_ key: GroupKey) -> UInt64 {
        maps.withLock { maps in
            if let known = maps.groupIDs[key] { return known }
            let id = Inodes.groupBase + UInt64(maps.groupIDs.count)
            maps.groupIDs[key] = id
            maps.groupKeys[id] = key
            return id
        }
    }

    func ino(of name: PipeName, view: View) -> UInt64 {
        let id = maps.withLock { maps -> UInt64 in
            if let known = maps.ids[name] { return known }
            let id = UInt64(maps.ids.count + 1)
            maps.ids[name] = id
            maps.names[id] = name
            return id
        }
        return id << 2 | view.rawValue
    }

    /// A fresh node id for one `mkfifo` answer; forgotten when the kernel forgets it.
    func fifoAlias(for name: PipeName) -> UInt64 {
        maps.withLock { maps in
            maps.nextAlias += 1
            maps.aliases[maps.nextAlias] = name
            return maps.nextAlias
        }
    }

    func forget(_ ino: UInt64) {
        guard ino >= Inodes.fifoBase else { return }
        maps.withLock { _ = $0.aliases.removeValue(forKey: ino) }
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
        return maps.withLock { maps -> Node? in
            if ino >= Inodes.fifoBase { return maps.aliases[ino].map { .fifoAlias($0) } }
            if ino >= Inodes.groupBase {
                switch maps.groupKeys[ino] {
                case .group(let g, let v): return .group(g, v)
                case .member(let g, let p, let v): return .member(group: g, pipe: p, v)
                case nil: return nil
                }
            }
            guard let view = View(rawValue: ino & 3), let name = maps.names[ino >> 2] else { return nil }
            return .pipe(name, view)
        }
    }
}
