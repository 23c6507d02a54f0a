#if canImport(Glibc)
import Glibc
#endif

/// Runs one system call that reports failure as a negative result and errno: retried while a signal
/// interrupts it (EINTR), and otherwise its errno is captured at once, before anything else can overwrite
/// it, into an error naming the call and its file ("write /data/pipes/p/…log: No space left on device").
/// Not for close(2), which must not be retried.
@discardableResult
func systemCall<Result: BinaryInteger>(_ what: @autoclosure () -> String, _ call: () -> Result) throws -> Result {
    while true {
        let result = call()
        if result >= 0 { return result }
        let code = errno
        if code == EINTR { continue }
        throw SystemError(what: what(), code: code)
    }
}

/// A failed system call: what it was, on which file, and the errno in words.
struct SystemError: Error, CustomStringConvertible {
    let what: String
    let code: Int32
    var description: String { "\(what): \(String(cString: strerror(code)))" }
}

/// The names in a directory (without `.` and `..`). Foundation's listing reports a failure to open it as
/// "Error Domain=NSCocoaErrorDomain Code=256 (null)"; this names the directory and the errno.
func directoryEntries(_ path: String) throws -> [String] {
    guard let dir = opendir(path) else { throw SystemError(what: "open directory \(path)", code: errno) }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// Reads up to `count` bytes of `fd` at `position` (fewer where the file ends) straight into new storage,
/// not zero-filled first.
func readBytes(_ fd: Int32, count: Int, at position: Int64, path: String) throws -> [UInt8] {
    try [UInt8](unsafeUninitializedCapacity: count) { raw, initialized in
        var done = 0
        while done < count {
            let n = try systemCall("read \(path)") { pread(fd, raw.baseAddress! + done, count - done, off_t(position) + off_t(done)) }
            if n == 0 { break }
            done += n
        }
        initialized = done
    }
}

/// Writes all of `bytes` to `fd` at `position`.
func writeBytes(_ fd: Int32, _ bytes: [UInt8], at position: Int64, path: String) throws {
    try bytes.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            done += try systemCall("write \(path)") { pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(position) + off_t(done)) }
        }
    }
}
