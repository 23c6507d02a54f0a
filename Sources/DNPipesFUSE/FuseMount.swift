import CFuse
import CFuseLoop
import Foundation
import Logging
import DNPipesFileSystem
#if canImport(Glibc)
import Glibc
#endif

/// A FUSE session serving a `PipeFileSystem` at a mount point: mount, serve until unmounted or told to stop,
/// then clean up.
// @unchecked Sendable: the session is set in init and torn down after the loop returned; from other threads
// only the stop signals' handler reaches it (through the stop pipe) while the loop runs.
public final class FuseMount: @unchecked Sendable {
    public struct MountError: Error, CustomStringConvertible {
        public let description: String
    }

    public let mountpoint: String
    private let filesystem: PipeFileSystem
    private let logger: Logger
    private var session: OpaquePointer?
    /// With metrics on, each callback is wrapped to time its request (see `FuseMetrics`).
    private var operations = FuseMetrics.isEnabled ? instrumented(makeOperations()) : makeOperations()
    private let threads: UInt32
    private let busyPollMicroseconds: UInt32
    /// The loop's reader polls `stopPipe[0]` beside /dev/fuse; the stop signals' handler writes to `stopPipe[1]`.
    private var stopPipe: [Int32] = [-1, -1]
    /// Set by `detach()`, so that the teardown does not unmount a second time. Both run on the daemon's
    /// thread after the loop, one after the other.
    private var detached = false

    /// `fuseOptions` are passed to libfuse as `-o` options (allow_other, default_permissions, fsname, ...).
    /// After a request from the process that sent the one before, the reading worker asks for the next one
    /// for `busyPollMicroseconds` before it sleeps; 0 never does (see Sources/CFuseLoop/fuse_serve.c).
    public init(filesystem: PipeFileSystem, mountpoint: String, fuseOptions: [String], threads: UInt32 = 16,
                busyPollMicroseconds: UInt32, logger: Logger) throws {
        self.filesystem = filesystem
        self.mountpoint = mountpoint
        self.logger = logger
        self.threads = threads
        self.busyPollMicroseconds = busyPollMicroseconds
        var argv = ["dnpipes"]
        if !fuseOptions.isEmpty { argv += ["-o", fuseOptions.joined(separator: ",")] }
        var cStrings = argv.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        var args = dnp_args_init()
        let session = cStrings.withUnsafeMutableBufferPointer { buf -> OpaquePointer? in
            args.argc = Int32(buf.count)
            args.argv = buf.baseAddress
            let s = fuse_session_new(&args, &operations, MemoryLayout<fuse_lowlevel_ops>.size,
                                     Unmanaged.passUnretained(filesystem).toOpaque())
            fuse_opt_free_args(&args)
            return s
        }
        guard let session else {
            throw MountError(description: "libfuse refused the options \(fuseOptions.joined(separator: ","))")
        }
        self.session = session
        guard pipe(&stopPipe) == 0,
              stopPipe.allSatisfy({ fcntl($0, F_SETFD, FD_CLOEXEC) == 0 && fcntl($0, F_SETFL, O_NONBLOCK) == 0 }) else {
            fuse_session_destroy(session)
            self.session = nil
            throw MountError(description: "cannot make the loop's stop pipe: \(String(cString: strerror(errno)))")
        }
    }

    deinit {
        stopPipe.filter { $0 >= 0 }.forEach { close($0) }
    }

    /// Mounts. A mount point left behind by a daemon that died (ENOTCONN) is detached first.
    public func mount() throws {
        // statvfs, unlike stat, is never answered from the kernel's cache, so it sees a dead mount at once;
        // crashes in a row can leave several layers, so detach until the mount point answers.
        var fs = statvfs()
        var layers = 0
        while statvfs(mountpoint, &fs) != 0 && errno == ENOTCONN && layers < 16 {
            logger.warning("\(mountpoint) is a dead mount of a daemon that died; detaching it")
            if umount2(mountpoint, Int32(MNT_DETACH)) != 0 { break }
            layers += 1
        }
        if fuse_session_mount(session, mountpoint) != 0 {
            throw MountError(description: "cannot mount on \(mountpoint) (see the lines above; is it an existing directory, and is /dev/fuse available?)")
        }
    }

    /// Serves requests until the file system is unmounted or a signal given to `stopOnSignals` comes.
    /// Returns 0 on a clean end.
    public func run() -> Int32 {
        dnp_fuse_serve(session, threads, busyPollMicroseconds, stopPipe[0])
    }

    /// From now on SIGTERM, SIGINT and SIGHUP end `run()` at once, whatever the process's threads are doing
    /// (see `dnp_stop_on_signals`); `stopSignal` then says which came.
    public func stopOnSignals() throws {
        let rc = dnp_stop_on_signals(stopPipe[1])
        guard rc == 0 else { throw MountError(description: "cannot handle signals: \(String(cString: strerror(-rc)))") }
    }

    /// The signal that ended `run()`, if one did.
    public var stopSignal: Int32? {
        let signal = dnp_stop_signal()
        return signal == 0 ? nil : signal
    }

    /// Detaches the mount once the loop has ended: the mount point shows the directory beneath from now on,
    /// while files still open keep the detached mount until they are closed. Requests parked before the loop
    /// ended can still be answered; any other request of theirs gets the kernel's ECONNABORTED once
    /// `unmountAndDestroy` closes the session.
    public func detach() {
        if umount2(mountpoint, Int32(MNT_DETACH)) == 0 {
            detached = true
            return
        }
        // Not root: ask fusermount3.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/fusermount3")
        p.arguments = ["-u", "-z", mountpoint]
        try? p.run()
        p.waitUntilExit()
        detached = p.terminationReason == .exit && p.terminationStatus == 0
    }

    public func unmountAndDestroy() {
        guard let session else { return }
        // Detached already: unmounting again would fail (EINVAL) while its files are open; closing the
        // session's descriptor, which fuse_session_destroy does, ends the detached mount's connection.
        if !detached { fuse_session_unmount(session) }
        fuse_session_destroy(session)
        self.session = nil
    }
}
