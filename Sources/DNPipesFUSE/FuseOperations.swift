import CFuse
#if canImport(Glibc)
import Glibc
#endif

// The C entry points libfuse calls, one thin trampoline each, from libfuse's worker threads. They live here
// as file-level functions (never main-actor isolated) and only forward to `PipeFileSystem`.

func fs(_ req: fuse_req_t?) -> PipeFileSystem {
    Unmanaged<PipeFileSystem>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
}

let interruptCallback: @convention(c) (fuse_req_t?, UnsafeMutableRawPointer?) -> Void = { req, data in
    fs(req).interrupts.interrupted(UInt64(UInt(bitPattern: data)))
}

func makeOperations() -> fuse_lowlevel_ops {
    var ops = fuse_lowlevel_ops()
    ops.`init` = { _, conn in
        // Large reads and writes: one FUSE write then carries hundreds of lines.
        dnp_conn_setup(conn, 1 << 20)
    }
    ops.lookup = { req, parent, name in fs(req).lookup(Request(raw: req!), parent: parent, name: name!) }
    ops.forget = { req, ino, _ in
        fs(req).forget(ino)
        fuse_reply_none(req)
    }
    ops.forget_multi = { req, count, forgets in
        let filesystem = fs(req)
        for i in 0..<count { filesystem.forget(forgets![i].ino) }
        fuse_reply_none(req)
    }
    ops.getattr = { req, ino, _ in fs(req).getattr(Request(raw: req!), ino: ino) }
    ops.setattr = { req, ino, attr, toSet, _ in fs(req).setattr(Request(raw: req!), ino: ino, attr: attr!.pointee, toSet: toSet) }
    ops.mknod = { req, parent, name, mode, _ in fs(req).mknod(Request(raw: req!), parent: parent, name: name!, mode: mode) }
    ops.mkdir = { req, _, name, _ in fs(req).refuseStructure(Request(raw: req!), "mkdir '\(String(cString: name!))'") }
    ops.rmdir = { req, parent, name in fs(req).rmdir(Request(raw: req!), parent: parent, name: name!) }
    ops.symlink = { req, _, _, name in fs(req).refuseStructure(Request(raw: req!), "symlink '\(String(cString: name!))'") }
    ops.link = { req, _, _, name in fs(req).refuseStructure(Request(raw: req!), "hard link '\(String(cString: name!))'") }
    ops.rename = { req, _, name, _, newName, _ in
        fs(req).refuseStructure(Request(raw: req!), "rename '\(String(cString: name!))' to '\(String(cString: newName!))'")
    }
    ops.unlink = { req, parent, name in fs(req).unlink(Request(raw: req!), parent: parent, name: name!) }
    ops.open = { req, ino, fi in fs(req).open(Request(raw: req!), ino: ino, flags: dnp_fi_flags(fi)) }
    ops.create = { req, parent, name, mode, fi in
        fs(req).create(Request(raw: req!), parent: parent, name: name!, mode: mode, flags: dnp_fi_flags(fi))
    }
    ops.read = { req, _, size, offset, fi in
        let request = Request(raw: req!)
        guard let handle = fs(req).handle(dnp_fi_fh(fi)), handle.canRead else { return request.reply(error: EBADF) }
        handle.read(request, size: size, offset: Int64(offset), flags: dnp_fi_flags(fi))
    }
    ops.write = { req, _, buf, size, _, fi in
        let request = Request(raw: req!)
        guard let handle = fs(req).handle(dnp_fi_fh(fi)) else { return request.reply(error: EBADF) }
        handle.write(request, bytes: UnsafeRawBufferPointer(start: buf, count: size), flags: dnp_fi_flags(fi))
    }
    ops.flush = { req, _, fi in
        let request = Request(raw: req!)
        guard let handle = fs(req).handle(dnp_fi_fh(fi)) else { return request.replyOK() }
        handle.flush(request)
    }
    ops.fsync = { req, _, _, fi in
        let request = Request(raw: req!)
        guard let handle = fs(req).handle(dnp_fi_fh(fi)) else { return request.reply(error: EBADF) }
        handle.flush(request)
    }
    ops.release = { req, _, fi in fs(req).release(Request(raw: req!), fh: dnp_fi_fh(fi)) }
    ops.poll = { req, _, fi, ph in
        let request = Request(raw: req!)
        guard let handle = fs(req).handle(dnp_fi_fh(fi)) else {
            if let ph { fuse_pollhandle_destroy(ph) }
            return request.reply(error: EBADF)
        }
        handle.poll(request, handle: ph)
    }
    ops.opendir = { req, ino, _ in fs(req).opendir(Request(raw: req!), ino: ino) }
    ops.readdir = { req, _, size, off, fi in fs(req).readdir(Request(raw: req!), fh: dnp_fi_fh(fi), size: size, offset: Int(off)) }
    ops.releasedir = { req, _, fi in fs(req).releasedir(Request(raw: req!), fh: dnp_fi_fh(fi)) }
    ops.statfs = { req, _ in fs(req).statfs(Request(raw: req!)) }
    addExtendedAttributeOperations(&ops)
    return ops
}
