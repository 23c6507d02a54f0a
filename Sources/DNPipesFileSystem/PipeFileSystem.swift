import Foundation
import Logging
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// The filesystem semantics: a directory whose files are pipes, served from a `PipeStore`.
///
/// Each operation takes plain values (node ids, names, offsets, flags, bytes) and a `Reply` token that it
/// answers exactly once, at once from memory or later from a queue: the caller's thread (a FUSE worker, in
/// the daemon) never waits on the network, and on the disk only for bounded work (a read's pread; an
/// append's write of one request's records, after the appends to the same pipe that came before it), so a
/// slow store cannot stall the mount. Nothing here knows the kernel's interface (see DNPipesFUSE).
public final class PipeFileSystem: Sendable {
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

    public let store: PipeStore
    let options: Options
    let logger: Logger
    let inodes = Inodes()
    let interrupts = InterruptTable()
    /// This mount's members of consumer groups.
    public let groups: Groups
    let work = DispatchQueue(label: "dnpipes.fs.work", attributes: .concurrent)
    let owner: (uid: uid_t, gid: gid_t)
    let mountTime: timespec = { var t = timespec(); clock_gettime(CLOCK_REALTIME, &t); return t }()

    /// Open handles by number, and the last number given.
    let handles = LockedValue<(next: UInt64, open: [UInt64: any OpenFile])>((0, [:]))
    /// Open directories: see `readdir`.
    let listings = LockedValue<(next: UInt64, open: [UInt64: (ino: UInt64, entries: [DirectoryEntry])])>((0, [:]))

    public init(store: PipeStore, options: Options, logger: Logger) {
        self.store = store
        self.options = options
        self.logger = logger
        groups = Groups(store: store, settings: options.groups, logger: logger)
        owner = (options.uid ?? getuid(), options.gid ?? getgid())
    }

    /// The request whose interrupt carries `token` (see `Reply.init`) was interrupted: a parked request
    /// is answered EINTR (from a queue: the caller may hold a lock of its own).
    public func interrupted(token: UInt64) { interrupts.interrupted(token) }

    /// The store could not make or open pipe `name`: a name it refuses is EINVAL, anything else EIO.
    func failed<Answer>(_ pending: PendingReply<Answer>, _ error: Error, _ doing: String, _ name: PipeName) {
        if case PipeError.invalidName(let why) = error {
            logger.warning("pipe name '\(name)' refused (EINVAL): \(why)")
            return pending.fail(EINVAL)
        }
        logger.error("\(doing) pipe \(name) failed: \(error)")
        pending.fail(EIO)
    }

    func refuse<Answer>(_ reply: Reply<Answer>, _ code: Int32, _ message: @autoclosure () -> String) {
        logger.notice("\(message()) (\(String(cString: strerror(code))))")
        reply.fail(code)
    }

    // MARK: Open files

    public func open(_ reply: Reply<OpenedFile>, ino: UInt64, flags: Int32) {
        switch inodes.node(ino) {
        case .pipe(let name, let view):
            if view != .pipe && flags & O_ACCMODE != O_RDONLY {
                return refuse(reply, EACCES, "opening view \(name) for writing refused: views are read-only")
            }
            openPipe(.open(reply), name: name, view: view, flags: flags)
        case .fifoAlias(let name): openPipe(.open(reply), name: name, view: .pipe, flags: flags)
        case .member(let group, let pipe, let view): openMember(reply, group: group, pipe: pipe, view: view, flags: flags)
        case nil: reply.fail(ENOENT)
        default: reply.fail(EISDIR)
        }
    }

    public func create(_ reply: Reply<CreatedFile>, parent: UInt64, name: EntryName, mode: mode_t, flags: Int32) {
        guard case .root = inodes.node(parent) else {
            return refuse(reply, EACCES, "create in a view directory refused: views are read-only")
        }
        guard let pipe = creatableName(name, reply, what: "pipe name") else { return }
        openPipe(.create(reply, exclusive: flags & O_EXCL != 0), name: pipe, view: .pipe, flags: flags)
    }

    /// An open's reply: a plain open's, or a create's (which first makes the pipe).
    private enum Opening {
        case open(Reply<OpenedFile>)
        case create(Reply<CreatedFile>, exclusive: Bool)
    }

    /// Opens (and for a create, first creates) a pipe on the work queue: opening a log may read the disk.
    private func openPipe(_ opening: Opening, name: PipeName, view: Inodes.View, flags: Int32) {
        switch opening {
        case .open(let reply):
            openPipe(PendingReply(reply, interrupts: interrupts), name: name, view: view, flags: flags, exclusive: nil) {
                OpenedFile(fh: $0.fh, isCached: $0.isCached)
            }
        case .create(let reply, let exclusive):
            openPipe(PendingReply(reply, interrupts: interrupts), name: name, view: view, flags: flags, exclusive: exclusive) {
                [self] in CreatedFile(entry: pipeAttributes(name, view: .pipe), file: OpenedFile(fh: $0.fh))
            }
        }
    }

    /// `exclusive` is nil for an open, else whether the create must make the pipe (O_EXCL).
    private func openPipe<Answer>(_ pending: PendingReply<Answer>, name: PipeName, view: Inodes.View, flags: Int32,
                                  exclusive: Bool?, answer: @escaping @Sendable (OpenPipe) -> Answer) {
        work.async { [self] in
            do {
                if let exclusive {
                    let created = try store.create(name)
                    if !created && exclusive { return pending.fail(EEXIST) }
                }
                guard let log = try store.open(name) else { return pending.fail(ENOENT) }
                // The handle is made only if the open is still wanted (no interrupt answered it meanwhile).
                let reply: @Sendable () -> Void = { [self] in
                    pending.answer { reply in
                        do {
                            reply.send(answer(try openHandle(log: log, view: view, flags: flags)))
                        } catch {
                            logger.error("opening pipe \(name) failed: \(error)")
                            reply.fail(EIO)
                        }
                    }
                }
                // A reader starts from the pipe as it is everywhere, not only as this host last saw it.
                if flags & O_ACCMODE != O_WRONLY { log.synchronize(completion: reply) } else { reply() }
            } catch {
                failed(pending, error, "opening", name)
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
        let fh = handles.withLock { $0.next += 1; return $0.next }
        let handle = try make(fh)
        handles.withLock { $0.open[fh] = handle }
        return (fh, handle)
    }

    func handle(_ fh: UInt64) -> (any OpenFile)? { handles.withLock { $0.open[fh] } }

    /// A read at file position `offset`; `flags` are the file's flags now (fcntl may have changed O_NONBLOCK
    /// since the open).
    public func read(_ reply: Reply<[UInt8]>, fh: UInt64, size: Int, offset: Int64, flags: Int32) {
        guard let handle = handle(fh), handle.canRead else { return reply.fail(EBADF) }
        handle.read(reply, size: size, offset: offset, flags: flags)
    }

    /// `bytes` are valid only during the call: what must wait is copied.
    public func write(_ reply: Reply<Int>, fh: UInt64, bytes: UnsafeRawBufferPointer, flags: Int32) {
        guard let handle = handle(fh) else { return reply.fail(EBADF) }
        handle.write(reply, bytes: bytes, flags: flags)
    }

    /// close(): see `OpenPipe.flush`. A handle already released has nothing left to flush.
    public func flush(_ reply: Reply<Done>, fh: UInt64) {
        guard let handle = handle(fh) else { return reply.ok() }
        handle.flush(reply)
    }

    public func fsync(_ reply: Reply<Done>, fh: UInt64) {
        guard let handle = handle(fh) else { return reply.fail(EBADF) }
        handle.flush(reply)
    }

    /// `waiter` is told once the handle may be read, unless a later poll replaces it.
    public func poll(_ reply: Reply<Int32>, fh: UInt64, waiter: (any PollWaiter)?) {
        guard let handle = handle(fh) else {
            waiter?.discard()
            return reply.fail(EBADF)
        }
        handle.poll(reply, waiter: waiter)
    }

    public func release(_ reply: Reply<Done>, fh: UInt64) {
        handles.withLock { $0.open.removeValue(forKey: fh) }?.release()
        reply.ok()
    }
}
