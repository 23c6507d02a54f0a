import CFuse
import DNPipesFileSystem
#if canImport(Glibc)
import Glibc
#endif

// The C entry points libfuse calls, one thin trampoline each, from libfuse's worker threads. They live here
// as file-level functions (never main-actor isolated), turn libfuse's arguments into plain values, and
// forward to `PipeFileSystem` with a `Reply` that answers through libfuse.

func fs(_ req: fuse_req_t?) -> PipeFileSystem {
    Unmanaged<PipeFileSystem>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
}

let interruptCallback: @convention(c) (fuse_req_t?, UnsafeMutableRawPointer?) -> Void = { req, data in
    fs(req).interrupted(token: UInt64(UInt(bitPattern: data)))
}

func name(_ raw: UnsafePointer<CChar>?) -> EntryName {
    EntryName(bytes: Array(UnsafeRawBufferPointer(start: raw!, count: strlen(raw!))))
}

/// What a setattr asks, in plain terms: libfuse gives a whole stat and says which of its fields count.
func changes(_ attr: Glibc.stat, _ toSet: Int32) -> AttributeChanges {
    func time(_ set: Int32, _ now: Int32) -> AttributeChanges.Time? {
        toSet & set == 0 ? nil : (toSet & now != 0 ? .now : .given)
    }
    var changes = AttributeChanges()
    if toSet & FUSE_SET_ATTR_MODE != 0 { changes.mode = attr.st_mode }
    if toSet & FUSE_SET_ATTR_UID != 0 { changes.uid = attr.st_uid }
    if toSet & FUSE_SET_ATTR_GID != 0 { changes.gid = attr.st_gid }
    if toSet & FUSE_SET_ATTR_SIZE != 0 { changes.size = Int64(attr.st_size) }
    changes.accessTime = time(FUSE_SET_ATTR_ATIME, FUSE_SET_ATTR_ATIME_NOW)
    changes.modificationTime = time(FUSE_SET_ATTR_MTIME, FUSE_SET_ATTR_MTIME_NOW)
    return changes
}

func makeOperations() -> fuse_lowlevel_ops {
    var ops = fuse_lowlevel_ops()
    ops.`init` = { _, conn in
        // Large reads and writes: one FUSE write then carries hundreds of lines.
        dnp_conn_setup(conn, UInt32(maxRequestBytes))
    }
    ops.lookup = { req, parent, n in fs(req).lookup(entryReply(req), parent: parent, name: name(n)) }
    ops.forget = { req, ino, _ in
        fs(req).forget(ino)
        fuse_reply_none(req)
    }
    ops.forget_multi = { req, count, forgets in
        let filesystem = fs(req)
        for i in 0..<count { filesystem.forget(forgets![i].ino) }
        fuse_reply_none(req)
    }
    ops.getattr = { req, ino, _ in fs(req).getattr(attributesReply(req), ino: ino) }
    ops.setattr = { req, ino, attr, toSet, _ in fs(req).setattr(attributesReply(req), ino: ino, changes: changes(attr!.pointee, toSet)) }
    ops.mknod = { req, parent, n, mode, _ in fs(req).mknod(entryReply(req), parent: parent, name: name(n), mode: mode) }
    ops.mkdir = { req, _, n, _ in fs(req).refuseStructure(entryReply(req), "mkdir '\(name(n))'") }
    ops.rmdir = { req, parent, n in fs(req).rmdir(doneReply(req), parent: parent, name: name(n)) }
    ops.symlink = { req, _, _, n in fs(req).refuseStructure(entryReply(req), "symlink '\(name(n))'") }
    ops.link = { req, _, _, n in fs(req).refuseStructure(entryReply(req), "hard link '\(name(n))'") }
    ops.rename = { req, _, n, _, newName, _ in
        fs(req).refuseStructure(doneReply(req), "rename '\(name(n))' to '\(name(newName))'")
    }
    ops.unlink = { req, parent, n in fs(req).unlink(doneReply(req), parent: parent, name: name(n)) }
    ops.open = { req, ino, fi in fs(req).open(openReply(req), ino: ino, flags: dnp_fi_flags(fi)) }
    ops.create = { req, parent, n, mode, fi in
        fs(req).create(createReply(req), parent: parent, name: name(n), mode: mode, flags: dnp_fi_flags(fi))
    }
    ops.read = { req, _, size, offset, fi in
        fs(req).read(dataReply(req), fh: dnp_fi_fh(fi), size: size, offset: Int64(offset), flags: dnp_fi_flags(fi))
    }
    ops.write = { req, _, buf, size, _, fi in
        fs(req).write(writtenReply(req), fh: dnp_fi_fh(fi), bytes: UnsafeRawBufferPointer(start: buf, count: size),
                      flags: dnp_fi_flags(fi))
    }
    ops.flush = { req, _, fi in fs(req).flush(doneReply(req), fh: dnp_fi_fh(fi)) }
    ops.fsync = { req, _, _, fi in fs(req).fsync(doneReply(req), fh: dnp_fi_fh(fi)) }
    ops.release = { req, _, fi in fs(req).release(doneReply(req), fh: dnp_fi_fh(fi)) }
    ops.poll = { req, _, fi, ph in fs(req).poll(pollReply(req), fh: dnp_fi_fh(fi), waiter: ph.map(FusePollWaiter.init)) }
    ops.opendir = { req, ino, _ in fs(req).opendir(openDirectoryReply(req), ino: ino) }
    ops.readdir = { req, _, size, off, fi in fs(req).readdir(directoryReply(req, size: size), fh: dnp_fi_fh(fi), offset: Int(off)) }
    ops.releasedir = { req, _, fi in fs(req).releasedir(doneReply(req), fh: dnp_fi_fh(fi)) }
    ops.statfs = { req, _ in fs(req).statfs(statisticsReply(req)) }
    ops.getxattr = { req, ino, n, size in fs(req).getxattr(attributeValueReply(req), ino: ino, name: String(cString: n!), size: size) }
    ops.listxattr = { req, ino, size in fs(req).listxattr(attributeValueReply(req), ino: ino, size: size) }
    ops.setxattr = { req, ino, n, value, size, flags in
        fs(req).setxattr(doneReply(req), ino: ino, name: String(cString: n!),
                         value: UnsafeRawBufferPointer(start: value, count: value == nil ? 0 : size), flags: flags)
    }
    ops.removexattr = { req, ino, n in fs(req).removexattr(doneReply(req), ino: ino, name: String(cString: n!)) }
    return ops
}
