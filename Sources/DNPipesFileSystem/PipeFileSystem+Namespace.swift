import Foundation
import Logging
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// Names and attributes: lookups, stat, making and deleting pipes, reset (truncate) and statfs.
extension PipeFileSystem {
    func directoryAttributes(_ ino: UInt64) -> Attributes {
        Attributes(ino: ino, mode: S_IFDIR | options.directoryMode, nlink: 2, uid: owner.uid, gid: owner.gid, time: mountTime,
                   timeout: options.cacheSeconds)
    }

    /// A pipe's size is its stream's (what a reader from the oldest message gets) and its times are those of
    /// its last push, as far as this mount knows: from its open log, or nothing yet (size 0, the mount's time)
    /// for a pipe no one here has opened. The kernel may not cache them: they change with every push.
    func pipeAttributes(_ name: PipeName, view: Inodes.View, extent: StreamExtent? = nil) -> Attributes {
        let extent = extent ?? store.openedLog(name)?.streamExtent()
        return Attributes(ino: inodes.ino(of: name, view: view), mode: S_IFREG | (view == .pipe ? options.pipeMode : options.pipeMode & 0o444),
                          uid: owner.uid, gid: owner.gid, time: extent?.lastPush ?? mountTime,
                          timeout: options.cacheSeconds, size: extent?.size ?? 0, attributeTimeout: 0)
    }

    private func attributes(_ ino: UInt64) -> Attributes? {
        switch inodes.node(ino) {
        case .root, .directory: return directoryAttributes(ino)
        case .pipe(let name, let view): return store.contains(name) ? pipeAttributes(name, view: view) : nil
        case .fifoAlias:
            return Attributes(ino: ino, mode: S_IFIFO | options.pipeMode, uid: owner.uid, gid: owner.gid, time: mountTime, timeout: 0)
        case .groups, .group: return directoryAttributes(ino)
        case .member(let group, let pipe, let view): return store.contains(pipe) ? memberAttributes(group, pipe, view) : nil
        case nil: return nil
        }
    }

    /// Validates a name the caller wants to create; logs and answers EINVAL when it is not a pipe name.
    func creatableName<Answer>(_ raw: EntryName, _ reply: Reply<Answer>, what: String) -> PipeName? {
        do {
            let name = try PipeName(validatingBytes: raw.bytes)
            if GroupJournal.isJournal(name) {
                throw PipeError.invalidName("names starting with \(GroupJournal.prefix) are kept for the journals of groups")
            }
            return name
        } catch {
            logger.warning("\(what) '\(raw)' refused (EINVAL): \(error)")
            reply.fail(EINVAL)
            return nil
        }
    }

    public func lookup(_ reply: Reply<Attributes>, parent: UInt64, name: EntryName) {
        let text = name.description
        switch inodes.node(parent) {
        case .root:
            if text == ".drain" { return reply.send(directoryAttributes(Inodes.drainDirectory)) }
            if text == ".tail" { return reply.send(directoryAttributes(Inodes.tailDirectory)) }
            if text == ".group" { return reply.send(directoryAttributes(Inodes.groupDirectory)) }
            if text == ".take" { return reply.send(directoryAttributes(Inodes.takeDirectory)) }
            guard let pipe = try? PipeName(validating: text), !GroupJournal.isJournal(pipe) else { return reply.fail(ENOENT) }
            lookUp(reply, pipe, view: .pipe)
        case .directory(let view):
            guard let pipe = try? PipeName(validating: text), !GroupJournal.isJournal(pipe) else { return reply.fail(ENOENT) }
            lookUp(reply, pipe, view: view)
        case .groups(let view):
            guard let group = try? PipeName(validating: text) else { return reply.fail(ENOENT) }
            reply.send(directoryAttributes(inodes.ino(ofGroup: group, view: view)))
        case .group(let group, let view):
            guard let pipe = try? PipeName(validating: text), !GroupJournal.isJournal(pipe) else { return reply.fail(ENOENT) }
            lookUp(reply, pipe) { [self] in memberAttributes(group, pipe, view) }
        default:
            reply.fail(ENOTDIR)
        }
    }

    /// Answers from memory when the pipe is known; otherwise asks the store on the work queue (a pipe made on
    /// another host moments ago), so that the caller's thread never waits on the network.
    func lookUp(_ reply: Reply<Attributes>, _ pipe: PipeName, view: Inodes.View) {
        lookUp(reply, pipe) { [self] in pipeAttributes(pipe, view: view) }
    }

    /// Answers a lookup of `pipe` (itself, a view of it, or a group's view) with `entry` if the pipe exists.
    func lookUp(_ reply: Reply<Attributes>, _ pipe: PipeName, entry: @escaping @Sendable () -> Attributes) {
        if store.contains(pipe) { return reply.send(entry()) }
        let pending = PendingReply(reply, interrupts: interrupts)
        work.async { [self] in
            let found = store.lookUp(pipe)
            pending.answer { found ? $0.send(entry()) : $0.fail(ENOENT) }
        }
    }

    /// A pipe whose log is not open yet is opened on the work queue (the embedded store reads its segments
    /// then), so that its size and mtime are true from the first stat.
    /// A log whose size lags this mount's own acknowledged pushes (Kafka counts what it fetches) is given a
    /// moment to catch up, parked, so that `stat` after a push shows it.
    public func getattr(_ reply: Reply<Attributes>, ino: UInt64) {
        if case .pipe(let name, let view) = inodes.node(ino), store.contains(name),
           store.openedLog(name).map({ $0.isSettling }) ?? true {
            let pending = PendingReply(reply, interrupts: interrupts)
            work.async { [self] in
                do {
                    guard let log = try store.open(name) else { return pending.fail(ENOENT) }
                    log.settle { pending.send(self.pipeAttributes(name, view: view, extent: log.streamExtent())) }
                } catch {
                    logger.error("opening pipe failed", metadata: ["pipe": "\(name)", "op": "getattr", "error": "\(error)"])
                    pending.fail(EIO)
                }
            }
            return
        }
        guard let attrs = attributes(ino) else { return reply.fail(ENOENT) }
        reply.send(attrs)
    }

    /// The kernel forgot a node: only the ids of `mkfifo` answers are let go (see `Inodes`).
    public func forget(_ ino: UInt64) { inodes.forget(ino) }

    /// `mkfifo` arrives here. The pipe must be a regular file to the kernel (a FIFO-typed node would route
    /// all I/O to the kernel's own pipe code), but the kernel rejects an answer to MKNOD(S_IFIFO) of another
    /// type. So the answer is a FIFO-typed node on a throw-away id that nobody may cache (timeouts 0); every
    /// later lookup of the name gives the pipe's real id, as a regular file.
    public func mknod(_ reply: Reply<Attributes>, parent: UInt64, name: EntryName, mode: mode_t) {
        guard case .root = inodes.node(parent) else {
            return refuse(reply, EACCES, "mknod in a view directory refused: views are read-only")
        }
        let type = mode & S_IFMT
        guard type == S_IFIFO || type == S_IFREG else {
            return refuse(reply, EPERM, "mknod '\(name)' refused: only pipes (FIFOs) can be made here")
        }
        guard let pipe = creatableName(name, reply, what: "pipe name") else { return }
        let pending = PendingReply(reply, interrupts: interrupts)
        work.async { [self] in
            do {
                guard try store.create(pipe) else { return pending.fail(EEXIST) }
                if type == S_IFIFO {
                    pending.send(Attributes(ino: inodes.fifoAlias(for: pipe), mode: S_IFIFO | options.pipeMode,
                                            uid: owner.uid, gid: owner.gid, time: mountTime, timeout: 0))
                } else {
                    pending.send(pipeAttributes(pipe, view: .pipe))
                }
            } catch {
                failed(pending, error, "creating", pipe)
            }
        }
    }

    public func unlink(_ reply: Reply<Done>, parent: UInt64, name: EntryName) {
        if case .group(let group, _) = inodes.node(parent) { return forget(reply, group: group, pipe: name.description) }
        guard case .root = inodes.node(parent) else {
            return refuse(reply, EACCES, "unlink in a view directory refused: views are read-only")
        }
        guard let pipe = try? PipeName(validating: name.description), !GroupJournal.isJournal(pipe) else {
            return reply.fail(ENOENT)
        }
        let pending = PendingReply(reply, interrupts: interrupts)
        work.async { [self] in
            do {
                try store.remove(pipe)
                pending.send(Done())
                // After the answer: forgetting the groups' journals waits for their last entries.
                groups.pipeRemoved(pipe)
            } catch PipeError.noSuchPipe {
                pending.fail(ENOENT)
            } catch {
                logger.error("deleting pipe \(pipe) failed: \(error)")
                pending.fail(EIO)
            }
        }
    }

    /// `truncate -s 0` resets a pipe; any other size is refused. A pipe's times are those of its last push:
    /// `touch` (the current time) is accepted and changes nothing, so scripts that touch a pipe go on; a
    /// given time (`touch -d`) is refused. A mode, owner or group equal to the current one is accepted, any
    /// other refused.
    public func setattr(_ reply: Reply<Attributes>, ino: UInt64, changes: AttributeChanges) {
        guard let current = attributes(ino) else { return reply.fail(ENOENT) }
        if changes.modificationTime == .given || changes.accessTime == .given, case .pipe = inodes.node(ino) {
            return refuse(reply, EPERM, "setting the times of a pipe refused: they are the times of its pushes")
        }
        if let mode = changes.mode, mode & 0o7777 != current.mode & 0o7777 {
            return refuse(reply, EPERM, "chmod \(String(mode & 0o7777, radix: 8)) refused: pipe modes are fixed")
        }
        if changes.uid.map({ $0 != current.uid }) ?? false || changes.gid.map({ $0 != current.gid }) ?? false {
            return refuse(reply, EPERM, "chown refused: pipes belong to the mounting user")
        }
        guard let size = changes.size else { return reply.send(current) }
        guard case .pipe(let name, let view) = inodes.node(ino) else {
            return refuse(reply, EISDIR, "truncate of a directory refused")
        }
        guard view == .pipe else { return refuse(reply, EACCES, "truncate of view \(name) refused: views are read-only") }
        guard size == 0 else {
            return refuse(reply, EINVAL, "truncate of \(name) to \(size) bytes refused: only size 0 (reset) is possible")
        }
        let logger = self.logger
        let pending = PendingReply(reply, interrupts: interrupts) {
            logger.notice("reset of \(name) interrupted before it completed; it goes on")
        }
        work.async { [self] in
            do {
                guard let log = try store.open(name) else { return pending.fail(ENOENT) }
                log.reset { error in
                    if let error {
                        logger.error("reset of \(name) failed: \(error)")
                        pending.fail(EIO)
                    } else {
                        logger.info("reset pipe \(name)")
                        pending.send(self.pipeAttributes(name, view: view, extent: log.streamExtent()))
                    }
                }
            } catch {
                logger.error("reset of \(name) failed: \(error)")
                pending.fail(EIO)
            }
        }
    }

    /// mkdir, symlink, link, rename: a pipe directory holds nothing but pipes.
    public func refuseStructure<Answer>(_ reply: Reply<Answer>, _ what: String) {
        refuse(reply, EPERM, "\(what) refused: a pipe directory holds only pipes")
    }

    public func statfs(_ reply: Reply<FileSystemStatistics>) {
        let pipes = (try? store.list().filter { !GroupJournal.isJournal($0) }.count) ?? 0
        reply.send(FileSystemStatistics(blockSize: 4096, nameMax: PipeName.maxLength, files: pipes))
    }
}
