import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What is mounted at a path, from the kernel's mount table and a stat of the path.
enum MountState: Equatable {
    /// Nothing is mounted there.
    case none
    /// A dnpipes mount whose daemon answers.
    case live
    /// A dnpipes mount whose daemon is gone: every access fails with ENOTCONN.
    case dead
    /// Another file system: not the plugin's to touch.
    case other(String)
}

enum MountPoint {
    static let fileSystemType = "fuse.dnpipes"

    static func state(of path: String) -> MountState {
        guard let type = mountedType(at: path) else { return .none }
        guard type == fileSystemType else { return .other(type) }
        var st = stat()
        if stat(path, &st) != 0 && errno == ENOTCONN { return .dead }
        return .live
    }

    /// The type of the topmost mount at `path` (mount points in /proc/self/mountinfo have spaces, tabs,
    /// newlines and backslashes as octal escapes).
    static func mountedType(at path: String) -> String? {
        guard let table = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        var found: String?
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 6, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
            if unescape(fields[4]) == path { found = String(fields[dash + 1]) }
        }
        return found
    }

    private static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        var chars = Array(field.utf8)[...]
        while let c = chars.popFirst() {
            if c == UInt8(ascii: "\\"), chars.count >= 3, let v = UInt8(String(decoding: chars.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(v)
                chars = chars.dropFirst(3)
            } else {
                bytes.append(c)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Makes the mount at `path` read-only (the mount, not the file system: writes get EROFS from the kernel
    /// before they reach the daemon; bind mounts kubelet makes of it for the pod's containers stay read-only).
    static func makeReadOnly(_ path: String) throws {
        let MS_RDONLY: UInt = 1, MS_REMOUNT: UInt = 32, MS_BIND: UInt = 4096
        guard mount(nil, path, nil, MS_REMOUNT | MS_BIND | MS_RDONLY, nil) == 0 else {
            throw SystemError("cannot make \(path) read-only", errno)
        }
    }

    /// Detaches a mount at once, also one whose daemon is gone.
    static func detach(_ path: String) throws {
        guard umount2(path, Int32(MNT_DETACH)) == 0 || errno == EINVAL || errno == ENOENT else {
            throw SystemError("cannot unmount \(path)", errno)
        }
    }

    /// Whether this process can open the FUSE device (what every mount needs first).
    static func canOpenFUSE() -> Bool {
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }
}

struct SystemError: Error, CustomStringConvertible {
    let description: String
    init(_ what: String, _ code: Int32) { description = "\(what): \(String(cString: strerror(code)))" }
}
