import CFuse
import Foundation
import Logging
import DNPipesCore

/// The filesystem semantics: a directory whose files are pipes, served from a `PipeStore`.
///
/// Callbacks answer from memory or hand the work to a queue and answer from there: a FUSE worker thread never
/// waits on the network, and on the disk only for bounded work (a read's pread; an append's write of one
/// request's records, after the appends to the same pipe that came before it), so a slow store cannot stall
/// the mount.
// @unchecked Sendable: `handles` and `nextHandle` are guarded by `lock`, listings live in a lock box, the
// rest is set in init.
public final class PipeFileSystem: @unchecked Sendable {
    public struct Options: Sendable {
        public var maxMessageBytes: Int
        /// How long the kernel may cache names and attributes. Short: another host may create or delete pipes.
        public var cacheSeconds: Double
        /// Who the mount's directories and pipes belong to: the daemon's user and group unless set, so that a
        /// mount made by root can be handed to other users (with allow_other, whose file modes the kernel checks).
        public var uid: uid_t?
        public var gid: gid_t?
        /// The permission bits of every pipe; a directory has them plus search where they allow reading.
        public var pipeMode: mode_t
        /// How consumer groups (`.group/`, `.take/`) behave.
        public var groups: GroupSettings
        public init(maxMessageBytes: Int = 1 << 20, cacheSeconds: Double = 1, groups: GroupSettings = GroupSettings(),
                    uid: uid_t? = nil, gid: gid_t? = nil, pipeMode: mode_t = 0o644) {
            self.maxMessageBytes = maxMessageBytes
            self.cacheSeconds = cacheSeconds
            self.groups = groups
            self.uid = uid
            self.gid = gid
            self.pipeMode = pipeMode & 0o777
        }
        var directoryMode: mode_t { pipeMode | ((pipeMode & 0o444) >> 2) }
    }

    let store: PipeStore
    let options: Options
    let logger: Logger
    let inodes = Inodes()
    let interrupts = InterruptTable()
    /// This mount's members of consumer groups.
    public let groups: Groups
    let work = DispatchQueue(label: "dnpipes.fs.work", attributes: .concurrent)
    let owner: (uid: uid_t, gid: gid_t)
    let mountTime: timespec = { var t = timespec(); clock_gettime(CLOCK_REALTIME, &t); return t }()

    let lock = NSLock()
    var handles: [UInt64: OpenFile] = [:]
    private var nextHandle: UInt64 = 0

    public init(store: PipeStore, options: Options, logger: Logger) {
        self.store = store
        self.options = options
        self.logger = logger
        groups = Groups(store: store, settings: options.groups, logger: logger)
        owner = (options.uid ?? getuid(), options.gid ?? getgid())
    }

    // MARK: Attributes

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
    private func creatableName(_ raw: UnsafePointer<CChar>, _ request: Request, what: String) -> PipeName? {
        let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(raw).assumingMemoryBound(to: UInt8.self), count: strlen(raw))
        do {
            let name = try PipeName(validatingBytes: bytes)
            if GroupJournal.isJournal(name) {
                throw PipeError.invalidName("names starting with \(GroupJournal.prefix) are kept for the journals of groups")
            }
            return name
        } catch {
            logger.warning("\(what) '\(String(decoding: bytes, as: UTF8.self))' refused (EINVAL): \(error)")
            request.reply(error: EINVAL)
            return nil
        }
    }

    func refuse(_ request: Request, _ code: Int32, _ message: @autoclosure () -> String) {
        logger.notice("\(message()) (\(String(cString: strerror(code))))")
        request.reply(error: code)
    }

    // MARK: Namespace

    func lookup(_ request: Request, parent: UInt64, name: UnsafePointer<CChar>) {
        let text = String(cString: name)
        switch inodes.node(parent) {
        case .root:
            if text == ".drain" { return request.reply(entry: directoryAttributes(Inodes.drainDirectory)) }
            if text == ".tail" { return request.reply(entry: directoryAttributes(Inodes.tailDirectory)) }
            if text == ".group" { return request.reply(entry: directoryAttributes(Inodes.groupDirectory)) }
            if text == ".take" { return request.reply(entry: directoryAttributes(Inodes.takeDirectory)) }
            guard let pipe = try? PipeName(validating: text), !GroupJournal.isJournal(pipe) else { return request.reply(error: ENOENT) }
            lookUp(request, pipe, view: .pipe)
        case .directory(let view):
            guard let pipe = try? PipeName(validating: text), !GroupJournal.isJournal(pipe) else { return request.reply(error: ENOENT) }
            lookUp(request, pipe, view: view)
        case .groups(let view):
            guard let group = try? PipeName(validating: text) else { return request.reply(error: ENOENT) }
            request.reply(entry: directoryAttributes(inodes.ino(ofGroup: group, view: view)))
        case .group(let group, let view):
            guard let pipe = try? PipeName(validating: text), !GroupJournal.isJournal(pipe) else { return request.reply(error: ENOENT) }
            lookUp(request, pipe) { [self] in memberAttributes(group, pipe, view) }
        default:
            request.reply(error: ENOTDIR)
        }
    }

    /// Answers from memory when the pipe is known; otherwise asks the store on the work queue (a pipe made on
    /// another host moments ago), so that a FUSE thread never waits on the network.
    func lookUp(_ request: Request, _ pipe: PipeName, view: Inodes.View) {
        lookUp(request, pipe) { [self] in pipeAttributes(pipe, view: view) }
    }

    /// Answers a lookup of `pipe` (itself, a view of it, or a group's view) with `entry` if the pipe exists.
    func lookUp(_ request: Request, _ pipe: PipeName, entry: @escaping @Sendable () -> Attributes) {
        if store.contains(pipe) { return request.reply(entry: entry()) }
        let pending = PendingReply(request, interrupts: interrupts)
        work.async { [self] in
            let found = store.lookUp(pipe)
            pending.answer { found ? $0.reply(entry: entry()) : $0.reply(error: ENOENT) }
        }
    }

    /// A pipe whose log is not open yet is opened on the work queue (the embedded store reads its segments
    /// then), so that its size and mtime are true from the first stat.
    /// A log whose size lags this mount's own acknowledged pushes (Kafka counts what it fetches) is given a
    /// moment to catch up, parked, so that `stat` after a push shows it.
    func getattr(_ request: Request, ino: UInt64) {
        if case .pipe(let name, let view) = inodes.node(ino), store.contains(name),
           store.openedLog(name).map({ $0.isSettling }) ?? true {
            let pending = PendingReply(request, interrupts: interrupts)
            work.async { [self] in
                do {
                    guard let log = try store.open(name) else { return pending.answer { $0.reply(error: ENOENT) } }
                    log.settle {
                        pending.answer { $0.reply(attributes: self.pipeAttributes(name, view: view, extent: log.streamExtent())) }
                    }
                } catch {
                    logger.error("opening pipe failed", metadata: ["pipe": "\(name)", "op": "getattr", "error": "\(error)"])
                    pending.answer { $0.reply(error: EIO) }
                }
            }
            return
        }
        guard let attrs = attributes(ino) else { return request.reply(error: ENOENT) }
        request.reply(attributes: attrs)
    }

    func forget(_ ino: UInt64) { inodes.forget(ino) }

    /// One directory entry: name, node id, type.
    typealias Entry = (name: String, ino: UInt64, type: mode_t)

    /// An open directory keeps the listing its first readdir took (as libfuse's passthrough_ll keeps its
    /// directory stream), so a pipe made or deleted between two readdir batches is neither skipped nor
    /// repeated: readdir's offsets are positions in that listing. A readdir from offset 0 (the first, or a
    /// rewinddir) lists again. The view directories are hidden from the root listing (like dot files they
    /// are there for those who know), and list every pipe themselves.
    private let listings = LockedValue<(next: UInt64, open: [UInt64: (ino: UInt64, entries: [Entry])])>((0, [:]))

    func opendir(_ request: Request, ino: UInt64) {
        switch inodes.node(ino) {
        case .root, .directory, .groups, .group: break
        case nil: return request.reply(error: ENOENT)
        default: return request.reply(error: ENOTDIR)
        }
        let fh = listings.withLock { state -> UInt64 in
            state.next += 1
            state.open[state.next] = (ino, [])
            return state.next
        }
        request.reply(openDirectory: fh)
    }

    func releasedir(_ request: Request, fh: UInt64) {
        listings.withLock { _ = $0.open.removeValue(forKey: fh) }
        request.replyOK()
    }

    /// The listing of directory `ino` now.
    private func listing(of ino: UInt64) throws -> [Entry] {
        var entries: [Entry] = [(".", ino, S_IFDIR), ("..", Inodes.root, S_IFDIR)]
        switch inodes.node(ino) {
        case .groups(let view):
            for g in try groups.list() { entries.append((g.value, inodes.ino(ofGroup: g, view: view), S_IFDIR)) }
            return entries
        case .group(let group, let view):
            for p in try store.list() where !GroupJournal.isJournal(p) {
                entries.append((p.value, inodes.ino(ofMember: group, pipe: p, view: view), S_IFREG))
            }
            return entries
        default:
            break
        }
        let view: Inodes.View
        if case .directory(let v) = inodes.node(ino) { view = v } else { view = .pipe }
        for p in try store.list() where !GroupJournal.isJournal(p) { entries.append((p.value, inodes.ino(of: p, view: view), S_IFREG)) }
        return entries
    }

    func readdir(_ request: Request, fh: UInt64, size: Int, offset: Int) {
        guard let open = listings.withLock({ $0.open[fh] }) else { return request.reply(error: EBADF) }
        var entries = open.entries
        if offset == 0 {
            do { entries = try listing(of: open.ino) } catch {
                logger.error("listing pipes failed", metadata: ["op": "readdir", "error": "\(error)"])
                return request.reply(error: EIO)
            }
            listings.withLock { $0.open[fh]?.entries = entries }
        }
        var buffer = [UInt8](repeating: 0, count: size)
        var used = 0
        var index = offset
        buffer.withUnsafeMutableBufferPointer { buf in
            let base = UnsafeMutableRawPointer(buf.baseAddress!).assumingMemoryBound(to: CChar.self)
            while index < entries.count {
                var st = stat()
                st.st_ino = UInt(entries[index].ino)
                st.st_mode = entries[index].type
                let n = fuse_add_direntry(request.raw, base + used, size - used, entries[index].name, &st, off_t(index + 1))
                if n > size - used { break }
                used += n
                index += 1
            }
        }
        request.reply(data: Array(buffer[0..<used]))
    }

    /// `mkfifo` arrives here. The pipe must be a regular file to the kernel (a FIFO-typed node would route
    /// all I/O to the kernel's own pipe code), but the kernel rejects an answer to MKNOD(S_IFIFO) of another
    /// type. So the answer is a FIFO-typed node on a throw-away id that nobody may cache (timeouts 0); every
    /// later lookup of the name gives the pipe's real id, as a regular file.
    func mknod(_ request: Request, parent: UInt64, name: UnsafePointer<CChar>, mode: mode_t) {
        guard case .root = inodes.node(parent) else {
            return refuse(request, EACCES, "mknod in a view directory refused: views are read-only")
        }
        let type = mode & S_IFMT
        guard type == S_IFIFO || type == S_IFREG else {
            return refuse(request, EPERM, "mknod '\(String(cString: name))' refused: only pipes (FIFOs) can be made here")
        }
        guard let pipe = creatableName(name, request, what: "pipe name") else { return }
        let pending = PendingReply(request, interrupts: interrupts)
        work.async { [self] in
            do {
                guard try store.create(pipe) else { return pending.answer { $0.reply(error: EEXIST) } }
                if type == S_IFIFO {
                    let alias = Attributes(ino: inodes.fifoAlias(for: pipe), mode: S_IFIFO | options.pipeMode,
                                           uid: owner.uid, gid: owner.gid, time: mountTime, timeout: 0)
                    pending.answer { $0.reply(entry: alias) }
                } else {
                    pending.answer { $0.reply(entry: pipeAttributes(pipe, view: .pipe)) }
                }
            } catch PipeError.invalidName(let why) {
                logger.warning("pipe name '\(pipe)' refused (EINVAL): \(why)")
                pending.answer { $0.reply(error: EINVAL) }
            } catch {
                logger.error("creating pipe \(pipe) failed: \(error)")
                pending.answer { $0.reply(error: EIO) }
            }
        }
    }

    func unlink(_ request: Request, parent: UInt64, name: UnsafePointer<CChar>) {
        if case .group(let group, _) = inodes.node(parent) { return forget(request, group: group, pipe: String(cString: name)) }
        guard case .root = inodes.node(parent) else {
            return refuse(request, EACCES, "unlink in a view directory refused: views are read-only")
        }
        guard let pipe = try? PipeName(validating: String(cString: name)), !GroupJournal.isJournal(pipe) else {
            return request.reply(error: ENOENT)
        }
        let pending = PendingReply(request, interrupts: interrupts)
        work.async { [self] in
            do {
                try store.remove(pipe)
                pending.answer { $0.replyOK() }
                // After the answer: forgetting the groups' journals waits for their last entries.
                groups.pipeRemoved(pipe)
            } catch PipeError.noSuchPipe {
                pending.answer { $0.reply(error: ENOENT) }
            } catch {
                logger.error("deleting pipe \(pipe) failed: \(error)")
                pending.answer { $0.reply(error: EIO) }
            }
        }
    }

    /// `truncate -s 0` resets a pipe; any other size is refused. A pipe's times are those of its last push:
    /// `touch` (the current time) is accepted and changes nothing, so scripts that touch a pipe go on; a
    /// given time (`touch -d`) is refused. A mode equal to the current one is accepted, any other refused.
    func setattr(_ request: Request, ino: UInt64, attr: stat, toSet: Int32) {
        guard let current = attributes(ino) else { return request.reply(error: ENOENT) }
        let explicitTime = (toSet & FUSE_SET_ATTR_MTIME != 0 && toSet & FUSE_SET_ATTR_MTIME_NOW == 0)
            || (toSet & FUSE_SET_ATTR_ATIME != 0 && toSet & FUSE_SET_ATTR_ATIME_NOW == 0)
        if explicitTime, case .pipe = inodes.node(ino) {
            return refuse(request, EPERM, "setting the times of a pipe refused: they are the times of its pushes")
        }
        if toSet & FUSE_SET_ATTR_MODE != 0 && attr.st_mode & 0o7777 != current.mode & 0o7777 {
            return refuse(request, EPERM, "chmod \(String(attr.st_mode & 0o7777, radix: 8)) refused: pipe modes are fixed")
        }
        if toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 && (attr.st_uid != current.uid || attr.st_gid != current.gid) {
            return refuse(request, EPERM, "chown refused: pipes belong to the mounting user")
        }
        guard toSet & FUSE_SET_ATTR_SIZE != 0 else { return request.reply(attributes: current) }
        guard case .pipe(let name, let view) = inodes.node(ino) else {
            return refuse(request, EISDIR, "truncate of a directory refused")
        }
        guard view == .pipe else { return refuse(request, EACCES, "truncate of view \(name) refused: views are read-only") }
        guard attr.st_size == 0 else {
            return refuse(request, EINVAL, "truncate of \(name) to \(attr.st_size) bytes refused: only size 0 (reset) is possible")
        }
        let logger = self.logger
        let pending = PendingReply(request, interrupts: interrupts) {
            logger.notice("reset of \(name) interrupted before it completed; it goes on")
        }
        work.async { [self] in
            do {
                guard let log = try store.open(name) else { return pending.answer { $0.reply(error: ENOENT) } }
                log.reset { error in
                    if let error {
                        logger.error("reset of \(name) failed: \(error)")
                        pending.answer { $0.reply(error: EIO) }
                    } else {
                        logger.info("reset pipe \(name)")
                        pending.answer { $0.reply(attributes: self.pipeAttributes(name, view: view, extent: log.streamExtent())) }
                    }
                }
            } catch {
                logger.error("reset of \(name) failed: \(error)")
                pending.answer { $0.reply(error: EIO) }
            }
        }
    }

    func refuseStructure(_ request: Request, _ what: String) {
        refuse(request, EPERM, "\(what) refused: a pipe directory holds only pipes")
    }

    func statfs(_ request: Request) {
        var st = statvfs()
        st.f_bsize = 4096
        st.f_frsize = 4096
        st.f_namemax = UInt(PipeName.maxLength)
        st.f_files = UInt((try? store.list().filter { !GroupJournal.isJournal($0) }.count) ?? 0)
        request.finished(0)
        fuse_reply_statfs(request.raw, &st)
    }

    // MARK: Open files

    func open(_ request: Request, ino: UInt64, flags: Int32) {
        guard case .pipe(let name, let view) = inodes.node(ino) else {
            if case .fifoAlias(let name) = inodes.node(ino) {
                return openPipe(request, name: name, view: .pipe, flags: flags, create: nil)
            }
            if case .member(let group, let pipe, let view) = inodes.node(ino) {
                return openMember(request, group: group, pipe: pipe, view: view, flags: flags)
            }
            return request.reply(error: inodes.node(ino) == nil ? ENOENT : EISDIR)
        }
        openPipe(request, name: name, view: view, flags: flags, create: nil)
    }

    func create(_ request: Request, parent: UInt64, name: UnsafePointer<CChar>, mode: mode_t, flags: Int32) {
        guard case .root = inodes.node(parent) else {
            return refuse(request, EACCES, "create in a view directory refused: views are read-only")
        }
        guard let pipe = creatableName(name, request, what: "pipe name") else { return }
        openPipe(request, name: pipe, view: .pipe, flags: flags, create: flags & O_EXCL != 0 ? .exclusive : .ifMissing)
    }

    private enum Creation { case ifMissing, exclusive }

    /// Opens (and with `create`, first creates) a pipe on the work queue: opening a log may read the disk.
    private func openPipe(_ request: Request, name: PipeName, view: Inodes.View, flags: Int32, create: Creation?) {
        if view != .pipe && flags & O_ACCMODE != O_RDONLY {
            return refuse(request, EACCES, "opening view \(name) for writing refused: views are read-only")
        }
        let pending = PendingReply(request, interrupts: interrupts)
        work.async { [self] in
            do {
                if let create {
                    let created = try store.create(name)
                    if !created && create == .exclusive { return pending.answer { $0.reply(error: EEXIST) } }
                }
                guard let log = try store.open(name) else { return pending.answer { $0.reply(error: ENOENT) } }
                // The handle is made only if the open is still wanted (no interrupt answered it meanwhile).
                let reply: @Sendable () -> Void = { [self] in
                    pending.answer { request in
                        do {
                            let handle = try openHandle(log: log, view: view, flags: flags)
                            if create != nil {
                                request.reply(create: pipeAttributes(name, view: .pipe), fh: handle.fh)
                            } else {
                                request.reply(open: handle.fh, cached: handle.isCached)
                            }
                        } catch {
                            logger.error("opening pipe \(name) failed: \(error)")
                            request.reply(error: EIO)
                        }
                    }
                }
                // A reader starts from the pipe as it is everywhere, not only as this host last saw it.
                if flags & O_ACCMODE != O_WRONLY { log.synchronize(completion: reply) } else { reply() }
            } catch PipeError.invalidName(let why) {
                logger.warning("pipe name '\(name)' refused (EINVAL): \(why)")
                pending.answer { $0.reply(error: EINVAL) }
            } catch {
                logger.error("opening pipe \(name) failed: \(error)")
                pending.answer { $0.reply(error: EIO) }
            }
        }
    }

    private func openHandle(log: PipeLog, view: Inodes.View, flags: Int32) throws -> OpenPipe {
        try register { fh in
            try OpenPipe(fh: fh, log: log, view: view, flags: flags,
                         maxMessageBytes: options.maxMessageBytes, logger: logger, interrupts: interrupts)
        }.file
    }

    /// Makes a handle under a new number and keeps it until its release.
    func register<File: OpenFile>(_ make: (UInt64) throws -> File) rethrows -> (fh: UInt64, file: File) {
        lock.lock()
        nextHandle += 1
        let fh = nextHandle
        lock.unlock()
        let handle = try make(fh)
        lock.lock()
        handles[fh] = handle
        lock.unlock()
        return (fh, handle)
    }

    func handle(_ fh: UInt64) -> OpenFile? {
        lock.lock(); defer { lock.unlock() }
        return handles[fh]
    }

    func release(_ request: Request, fh: UInt64) {
        lock.lock()
        let handle = handles.removeValue(forKey: fh)
        lock.unlock()
        handle?.release()
        request.replyOK()
    }
}
