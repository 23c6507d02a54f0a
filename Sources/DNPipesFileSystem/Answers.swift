#if canImport(Glibc)
import Glibc
#endif

/// What the kernel is told about a node (the answer of lookup, getattr, setattr, mknod).
public struct Attributes: Sendable, Equatable {
    public var ino: UInt64
    public var mode: mode_t
    public var nlink: Int = 1
    public var uid: uid_t
    public var gid: gid_t
    /// Its access, modification and change times, in seconds and nanoseconds since the epoch.
    public var seconds: Int
    public var nanoseconds: Int
    /// How long the kernel may cache the entry and attributes, in seconds.
    public var timeout: Double
    /// A pipe's size: the bytes a reader from its oldest message gets (see `StreamIndex`).
    public var size: Int64 = 0
    /// How long the kernel may cache the attributes, when not as long as the entry: a pipe's size and mtime
    /// change with every push, here or on another host.
    public var attributeTimeout: Double?

    init(ino: UInt64, mode: mode_t, nlink: Int = 1, uid: uid_t, gid: gid_t, time: timespec, timeout: Double,
         size: Int64 = 0, attributeTimeout: Double? = nil) {
        self.ino = ino
        self.mode = mode
        self.nlink = nlink
        self.uid = uid
        self.gid = gid
        seconds = time.tv_sec
        nanoseconds = time.tv_nsec
        self.timeout = timeout
        self.size = size
        self.attributeTimeout = attributeTimeout
    }
}

/// An open's answer: the handle number later requests carry, and whether the kernel may keep what the
/// handle reads in its page cache (see `OpenPipe.isCached`); otherwise every read reaches the filesystem.
public struct OpenedFile: Sendable, Equatable {
    public var fh: UInt64
    public var isCached = false
}

/// A create's answer: the new pipe and the handle open on it.
public struct CreatedFile: Sendable, Equatable {
    public var entry: Attributes
    public var file: OpenedFile
}

/// One entry of a directory listing; `next` is the offset a readdir continuing after it gives.
public struct DirectoryEntry: Sendable, Equatable {
    public var name: String
    public var ino: UInt64
    public var type: mode_t
    public var next: Int
}

/// What statfs tells.
public struct FileSystemStatistics: Sendable, Equatable {
    public var blockSize: Int
    public var nameMax: Int
    /// Pipes (journals of groups not counted).
    public var files: Int
}

/// The answer of getxattr and listxattr: the length alone when the caller asked with size 0, else the value.
public enum AttributeValue: Sendable, Equatable {
    case length(Int)
    case bytes([UInt8])

    /// `value` answered to a caller with room for `size` bytes: ERANGE when it does not fit.
    static func fitting(_ value: [UInt8], size: Int) -> ReplyOutcome<AttributeValue> {
        if size == 0 { return .answer(.length(value.count)) }
        return value.count > size ? .error(ERANGE) : .answer(.bytes(value))
    }
}

/// What a setattr asks to change; nil fields are left alone.
public struct AttributeChanges: Sendable, Equatable {
    /// A time to set: the current one (`touch`), or one the caller gives (`touch -d`).
    public enum Time: Sendable, Equatable { case now, given }
    public var mode: mode_t? = nil
    public var uid: uid_t? = nil
    public var gid: gid_t? = nil
    public var size: Int64? = nil
    public var accessTime: Time? = nil
    public var modificationTime: Time? = nil

    /// Nothing changed; set the fields that count.
    public init() {}
}
