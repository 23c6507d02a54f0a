import CFuse
import DNPipesFileSystem
#if canImport(Glibc)
import Glibc
#endif

/// libfuse's request pointer. Replies are thread-safe in libfuse, so a request may be answered from any
/// thread, long after its callback returned; each is answered once, through the `Reply` made for it.
// @unchecked Sendable: it is only a pointer; `Reply` sees that it is answered (and so freed) once.
struct Request: @unchecked Sendable {
    let raw: fuse_req_t

    /// Every reply ends the request's timing (see `FuseMetrics`) before libfuse frees the request.
    func finished(_ error: Int32) { if FuseMetrics.isEnabled { FuseMetrics.end(raw, error: error) } }
    func reply(error: Int32) { finished(error); fuse_reply_err(raw, error) }
}

/// The largest read and write the kernel sends (see dnp_conn_setup), and the preferred I/O size pipes
/// report: programs that size their buffers by it (cat, cp, dd without bs) then read and write 1 MiB at a
/// time, the largest FUSE request, instead of 64 or 128 KiB.
let maxRequestBytes = 1 << 20

/// The token for `req`: an answer goes to libfuse through `send`, an error through fuse_reply_err, and an
/// interrupt of the request reaches the filesystem as the token it armed.
func reply<Answer>(_ req: fuse_req_t?, _ send: @escaping @Sendable (Request, Answer) -> Void) -> Reply<Answer> {
    let request = Request(raw: req!)
    return Reply(armInterrupt: { token in
        fuse_req_interrupt_func(request.raw, interruptCallback, UnsafeMutableRawPointer(bitPattern: UInt(token)))
    }) { outcome in
        switch outcome {
        case .answer(let answer): send(request, answer)
        case .error(let code): request.reply(error: code)
        }
    }
}

func doneReply(_ req: fuse_req_t?) -> Reply<Done> {
    reply(req) { request, _ in request.finished(0); fuse_reply_err(request.raw, 0) }
}

func entryReply(_ req: fuse_req_t?) -> Reply<Attributes> {
    reply(req) { request, entry in
        request.finished(0)
        var e = entry.entryParam()
        fuse_reply_entry(request.raw, &e)
    }
}

func attributesReply(_ req: fuse_req_t?) -> Reply<Attributes> {
    reply(req) { request, attributes in
        request.finished(0)
        var st = attributes.stat()
        fuse_reply_attr(request.raw, &st, attributes.attributeTimeout ?? attributes.timeout)
    }
}

/// A pipe's open: see dnp_fi_set_pipe and dnp_fi_set_cached.
func openReply(_ req: fuse_req_t?) -> Reply<OpenedFile> {
    reply(req) { request, opened in
        request.finished(0)
        var fi = fuse_file_info()
        dnp_fi_set_fh(&fi, opened.fh)
        if opened.isCached { dnp_fi_set_cached(&fi) } else { dnp_fi_set_pipe(&fi) }
        fuse_reply_open(request.raw, &fi)
    }
}

func openDirectoryReply(_ req: fuse_req_t?) -> Reply<OpenedFile> {
    reply(req) { request, opened in
        request.finished(0)
        var fi = fuse_file_info()
        dnp_fi_set_fh(&fi, opened.fh)
        fuse_reply_open(request.raw, &fi)
    }
}

func createReply(_ req: fuse_req_t?) -> Reply<CreatedFile> {
    reply(req) { request, created in
        request.finished(0)
        var e = created.entry.entryParam()
        var fi = fuse_file_info()
        dnp_fi_set_fh(&fi, created.file.fh)
        dnp_fi_set_pipe(&fi)
        fuse_reply_create(request.raw, &e, &fi)
    }
}

func dataReply(_ req: fuse_req_t?) -> Reply<[UInt8]> {
    reply(req) { request, data in request.send(data) }
}

func writtenReply(_ req: fuse_req_t?) -> Reply<Int> {
    reply(req) { request, count in request.finished(0); fuse_reply_write(request.raw, count) }
}

func pollReply(_ req: fuse_req_t?) -> Reply<Int32> {
    reply(req) { request, events in request.finished(0); fuse_reply_poll(request.raw, UInt32(events)) }
}

/// Packs as many entries as fit in `size` bytes; the kernel asks again from the last one's `next`.
func directoryReply(_ req: fuse_req_t?, size: Int) -> Reply<ArraySlice<DirectoryEntry>> {
    reply(req) { request, entries in
        var buffer = [UInt8](repeating: 0, count: size)
        var used = 0
        buffer.withUnsafeMutableBufferPointer { buf in
            let base = UnsafeMutableRawPointer(buf.baseAddress!).assumingMemoryBound(to: CChar.self)
            for entry in entries {
                var st = Glibc.stat()
                st.st_ino = UInt(entry.ino)
                st.st_mode = entry.type
                let n = fuse_add_direntry(request.raw, base + used, size - used, entry.name, &st, off_t(entry.next))
                if n > size - used { break }
                used += n
            }
        }
        request.send(Array(buffer[0..<used]))
    }
}

func statisticsReply(_ req: fuse_req_t?) -> Reply<FileSystemStatistics> {
    reply(req) { request, stats in
        var st = statvfs()
        st.f_bsize = UInt(stats.blockSize)
        st.f_frsize = UInt(stats.blockSize)
        st.f_namemax = UInt(stats.nameMax)
        st.f_files = UInt(stats.files)
        request.finished(0)
        fuse_reply_statfs(request.raw, &st)
    }
}

/// getxattr and listxattr: the length alone (asked with size 0), or the value.
func attributeValueReply(_ req: fuse_req_t?) -> Reply<AttributeValue> {
    reply(req) { request, value in
        switch value {
        case .length(let count): request.finished(0); fuse_reply_xattr(request.raw, count)
        case .bytes(let bytes): request.send(bytes)
        }
    }
}

extension Request {
    func send(_ data: [UInt8]) {
        finished(0)
        data.withUnsafeBufferPointer { buf in
            _ = buf.baseAddress.map { base in
                base.withMemoryRebound(to: CChar.self, capacity: buf.count) { fuse_reply_buf(raw, $0, buf.count) }
            } ?? fuse_reply_buf(raw, nil, 0)
        }
    }
}

/// The kernel's poll handle, told or destroyed once.
// @unchecked Sendable: libfuse's poll handle may be notified and destroyed from any thread; the
// filesystem hands each to exactly one of `notify` or `discard`.
final class FusePollWaiter: PollWaiter, @unchecked Sendable {
    private let handle: OpaquePointer
    init(_ handle: OpaquePointer) { self.handle = handle }

    func notify() {
        fuse_lowlevel_notify_poll(handle)
        fuse_pollhandle_destroy(handle)
    }

    func discard() { fuse_pollhandle_destroy(handle) }
}

extension Attributes {
    func stat() -> Glibc.stat {
        var st = Glibc.stat()
        st.st_ino = UInt(ino)
        st.st_mode = mode
        st.st_nlink = UInt(nlink)
        st.st_uid = uid
        st.st_gid = gid
        st.st_size = off_t(size)
        st.st_blocks = blkcnt_t((size + 511) / 512)
        st.st_blksize = maxRequestBytes
        let time = timespec(tv_sec: seconds, tv_nsec: nanoseconds)
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
