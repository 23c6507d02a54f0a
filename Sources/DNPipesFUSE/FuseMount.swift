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
// only fuse_session_exit and umount reach it, which libfuse allows while the loop runs.
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

    /// Serves requests until the file system is unmounted or `stop()` is called. Returns 0 on a clean end.
    public func run() -> Int32 {
        let rc = dnp_fuse_serve(session, threads, busyPollMicroseconds)
        return rc
    }

    /// Ends the loop and unmounts (from a signal handler's queue).
    public func stop() {
        fuse_session_exit(session)
        // The loop's reader sleeps in poll(2) on /dev/fuse; detaching the mount wakes it, and its next read ends the loop.
        if umount2(mountpoint, Int32(MNT_DETACH)) != 0 {
            // Not root: ask fusermount3.
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/fusermount3")
            p.arguments = ["-u", "-z", mountpoint]
            try? p.run()
            p.waitUntilExit()
        }
    }

    public func unmountAndDestroy() {
        guard let session else { return }
        fuse_session_unmount(session)
        fuse_session_destroy(session)
        self.session = nil
    }
}
