import Foundation
import Logging
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// The group views: `.group/GROUP/PIPE` (loop workers) and `.take/GROUP/PIPE` (one-shot takers). Any valid
/// name is a group; a group is listed once it has read a pipe, and `rmdir` (or `rm` of one of its pipes)
/// forgets it. Opens and removals run on the work queue: they open logs and journals.
extension PipeFileSystem {
    /// Read-only regular files, sized 0: a group reader does not read at positions.
    func memberAttributes(_ group: PipeName, _ pipe: PipeName, _ view: Inodes.GroupView) -> Attributes {
        Attributes(ino: inodes.ino(ofMember: group, pipe: pipe, view: view), mode: S_IFREG | (options.pipeMode & 0o444),
                   uid: owner.uid, gid: owner.gid, time: mountTime, timeout: options.cacheSeconds)
    }

    func openMember(_ reply: Reply<OpenedFile>, group: PipeName, pipe: PipeName, view: Inodes.GroupView, flags: Int32) {
        guard flags & O_ACCMODE == O_RDONLY else {
            return refuse(reply, EACCES, "opening group \(group)'s view of \(pipe) for writing refused: group views are read-only")
        }
        let pending = PendingReply(reply, interrupts: interrupts)
        work.async { [self] in
            do {
                let member = try groups.member(group: group, pipe: pipe)
                pending.answer { reply in
                    let fh = register { _ in
                        GroupReader(member: member, oneShot: view == .take, interrupts: interrupts, logger: logger)
                    }.fh
                    reply.send(OpenedFile(fh: fh))
                }
            } catch PipeError.noSuchPipe {
                pending.fail(ENOENT)
            } catch PipeError.invalidName(let why) {
                logger.warning("group view refused (ENAMETOOLONG): \(why)")
                pending.fail(ENAMETOOLONG)
            } catch {
                logger.error("opening a group's view failed", metadata: ["group": "\(group)", "pipe": "\(pipe)", "error": "\(error)"])
                pending.fail(EIO)
            }
        }
    }

    /// `rm .group/GROUP/PIPE`: the group forgets that pipe (its readers start again from the oldest message).
    func forget(_ reply: Reply<Done>, group: PipeName, pipe raw: String) {
        guard let pipe = try? PipeName(validating: raw) else { return reply.fail(ENOENT) }
        let pending = PendingReply(reply, interrupts: interrupts)
        work.async { [self] in
            do {
                try groups.remove(group: group, pipe: pipe)
                logger.info("group \(group) forgot pipe \(pipe)")
                pending.send(Done())
            } catch PipeError.noSuchPipe {
                pending.fail(ENOENT)
            } catch {
                logger.error("forgetting a group failed", metadata: ["group": "\(group)", "pipe": "\(pipe)", "error": "\(error)"])
                pending.fail(EIO)
            }
        }
    }

    /// `rmdir .group/GROUP` (or `.take/GROUP`): the group forgets every pipe.
    public func rmdir(_ reply: Reply<Done>, parent: UInt64, name: EntryName) {
        let text = name.description
        guard case .groups = inodes.node(parent) else { return refuseStructure(reply, "rmdir '\(text)'") }
        guard let group = try? PipeName(validating: text) else { return reply.fail(ENOENT) }
        let pending = PendingReply(reply, interrupts: interrupts)
        work.async { [self] in
            do {
                guard try groups.list().contains(group) else { return pending.fail(ENOENT) }
                try groups.remove(group: group)
                logger.info("forgot group \(group)")
                pending.send(Done())
            } catch {
                logger.error("forgetting a group failed", metadata: ["group": "\(group)", "error": "\(error)"])
                pending.fail(EIO)
            }
        }
    }

    /// `getfattr -n user.dnpipes.backlog .group/GROUP/PIPE`: what the group has not done, without reading
    /// it: `backlog` (free: no member has it) and `taken` (out with a member on any host: with a reader, or
    /// claimed ahead for its readers). A group that
    /// never read the pipe has every retained message free; asking does not make it.
    func groupBacklog(_ reply: Reply<AttributeValue>, group: PipeName, pipe: PipeName, name: String, size: Int) {
        guard let attribute = GroupAttribute(name: name) else { return reply.fail(ENODATA) }
        let pending = PendingReply(reply, interrupts: interrupts)
        work.async { [self] in
            do {
                let journal = try GroupJournal.name(group: group, pipe: pipe)
                guard store.contains(journal) else {
                    guard let log = try store.open(pipe) else { return pending.fail(ENOENT) }
                    let free = attribute == .backlog ? PipeFileSystem.facts(of: log).messages : 0
                    return pending.answer { $0.finish(AttributeValue.fitting(Array("\(free)".utf8), size: size)) }
                }
                try groups.member(group: group, pipe: pipe).backlog { free, out in
                    pending.answer { $0.finish(AttributeValue.fitting(Array("\(attribute == .backlog ? free : out)".utf8), size: size)) }
                }
            } catch PipeError.noSuchPipe {
                pending.fail(ENOENT)
            } catch {
                logger.error("reading a group's backlog failed", metadata: ["group": "\(group)", "pipe": "\(pipe)", "error": "\(error)"])
                pending.fail(EIO)
            }
        }
    }
}

/// The attributes of a group's view of a pipe.
enum GroupAttribute: String, CaseIterable {
    /// Messages no reader of the group has yet.
    case backlog
    /// Messages out with a member of the group, not done yet: being read, or claimed ahead for its readers.
    case taken

    init?(name: String) {
        guard name.hasPrefix(PipeAttribute.prefix) else { return nil }
        self.init(rawValue: String(name.dropFirst(PipeAttribute.prefix.count)))
    }

    static let list: [UInt8] = allCases.flatMap { Array((PipeAttribute.prefix + $0.rawValue).utf8) + [0] }
}
