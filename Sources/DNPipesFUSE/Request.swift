import CFuse
#if canImport(Glibc)
import Glibc
#endif

/// One kernel request, answered exactly once through one of the `reply` methods. Replies are thread-safe in
/// libfuse, so a request may be answered from any thread, long after its callback returned.
// @unchecked Sendable: it holds libfuse's request pointer, whose replies may come from any thread; each
// request is answered once (PendingReply, the handles' parked lists and Answer see to that).
struct Request: @unchecked Sendable {
    let raw: fuse_req_t

    func reply(error: Int32) { finished(error); fuse_reply_err(raw, error) }
    func replyOK() { finished(0); fuse_reply_err(raw, 0) }
    /// Every reply ends the request's timing (see `FuseMetrics`) before libfuse frees the request.
    func finished(_ error: Int32) { if FuseMetrics.isEnabled { FuseMetrics.end(raw, error: error) } }
    func reply(entry: Attributes) {
        finished(0)
        var e = entry.entryParam()
        fuse_reply_entry(raw, &e)
    }
    func reply(attributes: Attributes) {
        finished(0)
        var st = attributes.stat()
        fuse_reply_attr(raw, &st, attributes.attributeTimeout ?? attributes.timeout)
    }
    /// `cached`: the kernel may keep what the handle reads in its page cache (see `OpenPipe.isCached`).
    func reply(open fh: UInt64, cached: Bool = false) {
        finished(0)
        var fi = fuse_file_info()
        dnp_fi_set_fh(&fi, fh)
        if cached { dnp_fi_set_cached(&fi) } else { dnp_fi_set_pipe(&fi) }
        fuse_reply_open(raw, &fi)
    }
    func reply(openDirectory fh: UInt64) {
        finished(0)
        var fi = fuse_file_info()
        dnp_fi_set_fh(&fi, fh)
        fuse_reply_open(raw, &fi)
    }
    func reply(create entry: Attributes, fh: UInt64) {
        finished(0)
        var e = entry.entryParam()
        var fi = fuse_file_info()
        dnp_fi_set_fh(&fi, fh)
        dnp_fi_set_pipe(&fi)
        fuse_reply_create(raw, &e, &fi)
    }
    func reply(data: [UInt8]) {
        finished(0)
        data.withUnsafeBufferPointer { buf in
            _ = buf.baseAddress.map { base in
                base.withMemoryRebound(to: CChar.self, capacity: buf.count) { fuse_reply_buf(raw, $0, buf.count) }
            } ?? fuse_reply_buf(raw, nil, 0)
        }
    }
    func reply(written: Int) { finished(0); fuse_reply_write(raw, written) }
    func reply(poll events: Int32) { finished(0); fuse_reply_poll(raw, UInt32(events)) }

    var caller: (uid: uid_t, gid: gid_t, pid: pid_t) {
        let ctx = fuse_req_ctx(raw)!.pointee
        return (ctx.uid, ctx.gid, ctx.pid)
    }
}

/// A reply decided under a lock, sent once the lock is released.
enum Answer: Equatable {
    case data([UInt8])
    case written(Int)
    case error(Int32)

    func send(_ request: Request) {
        switch self {
        case .data(let bytes): request.reply(data: bytes)
        case .written(let count): request.reply(written: count)
        case .error(let code): request.reply(error: code)
        }
    }
}

/// What the kernel is told about a node.
struct Attributes {
    var ino: UInt64
    var mode: mode_t
    var nlink: Int = 1
    var uid: uid_t
    var gid: gid_t
    var time: timespec
    /// How long the kernel may cache the entry and attributes, in seconds.
    var timeout: Double
    /// A pipe's size: the bytes a reader from its oldest message gets (see `StreamIndex`).
    var size: Int64 = 0
    /// How long the kernel may cache the attributes, when not as long as the entry: a pipe's size and mtime
    /// change with every push, here or on another host.
    var attributeTimeout: Double?

    /// Equal to max_write (see dnp_conn_setup).
    static let preferredIOSize = 1 << 20

    func stat() -> Glibc.stat {
        var st = Glibc.stat()
        st.st_ino = UInt(ino)
        st.st_mode = mode
        st.st_nlink = UInt(nlink)
        st.st_uid = uid
        st.st_gid = gid
        st.st_size = off_t(size)
        st.st_blocks = blkcnt_t((size + 511) / 512)
        // The preferred I/O size: programs that size their buffers by it (cat, cp, dd without bs) then read
        // and write 1 MiB at a time, the largest FUSE request, instead of 64 or 128 KiB.
        st.st_blksize = Attributes.preferredIOSize
        st.st_atim = time
        st.st_mtim = time
        st.st_ctim = time
        return st
    }

    func entryParam() -> fuse_entry_param {
        var e = fuse_entry_param()
        e.ino = ino
        e.generation = 1
        e.attr = stat()
        e.attr_timeout = attributeTimeout ?? timeout
        e.entry_timeout = timeout
        return e
    }
}
