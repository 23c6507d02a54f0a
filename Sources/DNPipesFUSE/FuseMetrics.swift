import CFuse
import CoreMetrics
import Dispatch
import Foundation
import DNPipesCore
import DNPipesFileSystem

/// Metrics of the kernel interface, recorded through swift-metrics (the daemon chooses the backend: Prometheus
/// with --metrics-address, none otherwise): requests and errors per operation, and how long each took until
/// its answer (a parked read counts until it is answered). What each pipe pushed and delivered is counted
/// by the filesystem (`PipeMetrics`), turned on with these.
///
/// A request's start is noted by a wrapper around its callback (`instrumented`) and its end by the reply
/// (`Request.finished`), in a table keyed by libfuse's request pointer, so that requests answered later, from another
/// thread, are timed to their answer. Without metrics the callbacks are not wrapped and nothing is noted.
public enum FuseMetrics {
    /// Set once, before the session starts (its threads are made after it), and only read afterwards.
    nonisolated(unsafe) public private(set) static var isEnabled = false

    /// Turns recording on, of requests and of pipes (`PipeMetrics`): call before the mount is made.
    public static func enable() {
        isEnabled = true
        PipeMetrics.enable()
    }

    /// The buckets of `dnpipes_fuse_request_duration_seconds`: FUSE requests take microseconds to seconds
    /// (a read parked until a push).
    public static let durationBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(100),
        .milliseconds(250), .seconds(1), .seconds(10), .seconds(60),
    ]
    public static let durationName = "dnpipes_fuse_request_duration_seconds"

    enum Operation: String, CaseIterable, Sendable {
        case lookup, getattr, setattr, mknod, mkdir, rmdir, symlink, link, rename, unlink, open, create, read, write,
             flush, fsync, release, poll, opendir, readdir, releasedir, statfs, getxattr, listxattr, setxattr, removexattr
    }

    private struct OperationSeries: Sendable {
        let requests: Counter
        let duration: CoreMetrics.Timer
    }

    private static let series: [Operation: OperationSeries] = Dictionary(uniqueKeysWithValues: Operation.allCases.map {
        ($0, OperationSeries(requests: Counter(label: "dnpipes_fuse_requests_total", dimensions: [("op", $0.rawValue)]),
                             duration: CoreMetrics.Timer(label: durationName, dimensions: [("op", $0.rawValue)])))
    })
    private static let started = LockedValue<[UInt: (Operation, UInt64)]>([:])
    private static let errors = LockedValue<[String: Counter]>([:])

    static func begin(_ req: fuse_req_t?, _ operation: Operation) {
        guard let req else { return }
        let key = UInt(bitPattern: req)
        let now = DispatchTime.now().uptimeNanoseconds
        started.withLock { table in
            // A request answered some other way than through `Request` would stay here: never let them pile up.
            if table.count > 1 << 16 { table.removeAll() }
            table[key] = (operation, now)
        }
    }

    /// The request was answered with `error` (0 for success).
    static func end(_ req: fuse_req_t, error: Int32) {
        guard isEnabled, let (operation, start) = started.withLock({ $0.removeValue(forKey: UInt(bitPattern: req)) }) else { return }
        let elapsed = DispatchTime.now().uptimeNanoseconds - start
        let s = series[operation]!
        s.requests.increment()
        s.duration.recordNanoseconds(Int64(elapsed))
        guard error != 0 else { return }
        let name = errnoName(error)
        let key = operation.rawValue + " " + name
        if let counter = errors.withLock({ $0[key] }) { return counter.increment() }
        // Made outside the lock (the factory takes its own); a second maker of the same series gets it too.
        let made = Counter(label: "dnpipes_fuse_errors_total", dimensions: [("op", operation.rawValue), ("errno", name)])
        errors.withLock { $0[key] = $0[key] ?? made }
        made.increment()
    }
}

/// The operations table with each callback wrapped to note its request's start. libfuse calls plain C
/// functions, which capture nothing: the wrappers reach the unwrapped table through this global, written once
/// before the session is made.
nonisolated(unsafe) private var unwrapped = fuse_lowlevel_ops()

func instrumented(_ ops: fuse_lowlevel_ops) -> fuse_lowlevel_ops {
    unwrapped = ops
    var o = ops
    typealias Op = FuseMetrics.Operation
    if ops.lookup != nil { o.lookup = { r, a, b in FuseMetrics.begin(r, Op.lookup); unwrapped.lookup!(r, a, b) } }
    if ops.getattr != nil { o.getattr = { r, a, b in FuseMetrics.begin(r, Op.getattr); unwrapped.getattr!(r, a, b) } }
    if ops.setattr != nil { o.setattr = { r, a, b, c, d in FuseMetrics.begin(r, Op.setattr); unwrapped.setattr!(r, a, b, c, d) } }
    if ops.mknod != nil { o.mknod = { r, a, b, c, d in FuseMetrics.begin(r, Op.mknod); unwrapped.mknod!(r, a, b, c, d) } }
    if ops.mkdir != nil { o.mkdir = { r, a, b, c in FuseMetrics.begin(r, Op.mkdir); unwrapped.mkdir!(r, a, b, c) } }
    if ops.rmdir != nil { o.rmdir = { r, a, b in FuseMetrics.begin(r, Op.rmdir); unwrapped.rmdir!(r, a, b) } }
    if ops.symlink != nil { o.symlink = { r, a, b, c in FuseMetrics.begin(r, Op.symlink); unwrapped.symlink!(r, a, b, c) } }
    if ops.link != nil { o.link = { r, a, b, c in FuseMetrics.begin(r, Op.link); unwrapped.link!(r, a, b, c) } }
    if ops.rename != nil { o.rename = { r, a, b, c, d, e in FuseMetrics.begin(r, Op.rename); unwrapped.rename!(r, a, b, c, d, e) } }
    if ops.unlink != nil { o.unlink = { r, a, b in FuseMetrics.begin(r, Op.unlink); unwrapped.unlink!(r, a, b) } }
    if ops.open != nil { o.open = { r, a, b in FuseMetrics.begin(r, Op.open); unwrapped.open!(r, a, b) } }
    if ops.create != nil { o.create = { r, a, b, c, d in FuseMetrics.begin(r, Op.create); unwrapped.create!(r, a, b, c, d) } }
    if ops.read != nil { o.read = { r, a, b, c, d in FuseMetrics.begin(r, Op.read); unwrapped.read!(r, a, b, c, d) } }
    if ops.write != nil { o.write = { r, a, b, c, d, e in FuseMetrics.begin(r, Op.write); unwrapped.write!(r, a, b, c, d, e) } }
    if ops.flush != nil { o.flush = { r, a, b in FuseMetrics.begin(r, Op.flush); unwrapped.flush!(r, a, b) } }
    if ops.fsync != nil { o.fsync = { r, a, b, c in FuseMetrics.begin(r, Op.fsync); unwrapped.fsync!(r, a, b, c) } }
    if ops.release != nil { o.release = { r, a, b in FuseMetrics.begin(r, Op.release); unwrapped.release!(r, a, b) } }
    if ops.poll != nil { o.poll = { r, a, b, c in FuseMetrics.begin(r, Op.poll); unwrapped.poll!(r, a, b, c) } }
    if ops.opendir != nil { o.opendir = { r, a, b in FuseMetrics.begin(r, Op.opendir); unwrapped.opendir!(r, a, b) } }
    if ops.readdir != nil { o.readdir = { r, a, b, c, d in FuseMetrics.begin(r, Op.readdir); unwrapped.readdir!(r, a, b, c, d) } }
    if ops.releasedir != nil { o.releasedir = { r, a, b in FuseMetrics.begin(r, Op.releasedir); unwrapped.releasedir!(r, a, b) } }
    if ops.statfs != nil { o.statfs = { r, a in FuseMetrics.begin(r, Op.statfs); unwrapped.statfs!(r, a) } }
    if ops.getxattr != nil { o.getxattr = { r, a, b, c in FuseMetrics.begin(r, Op.getxattr); unwrapped.getxattr!(r, a, b, c) } }
    if ops.listxattr != nil { o.listxattr = { r, a, b in FuseMetrics.begin(r, Op.listxattr); unwrapped.listxattr!(r, a, b) } }
    if ops.setxattr != nil { o.setxattr = { r, a, b, c, d, e in FuseMetrics.begin(r, Op.setxattr); unwrapped.setxattr!(r, a, b, c, d, e) } }
    if ops.removexattr != nil { o.removexattr = { r, a, b in FuseMetrics.begin(r, Op.removexattr); unwrapped.removexattr!(r, a, b) } }
    return o
}
