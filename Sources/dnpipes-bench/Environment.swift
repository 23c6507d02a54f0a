import DNPipesTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The tansu broker (memory storage) on a free loopback port, as in the test suite.
final class Broker {
    let port: Int
    private let pid: pid_t
    var address: String { "127.0.0.1:\(port)" }

    init(work: String) throws {
        port = freeLoopbackPort()
        let log = open(work + "/tansu.log", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        defer { close(log) }
        let tansu = try shellOutput("command -v tansu")
        pid = try spawn([tansu, "broker", "--listener-url", "tcp://127.0.0.1:\(port)",
                         "--advertised-listener-url", "tcp://127.0.0.1:\(port)"], stdout: log, stderr: log)
        let deadline = monotonicNow() + 20
        while !canConnect(port: port) {
            guard monotonicNow() < deadline else { stop(); throw BenchError("tansu did not listen on port \(port) (see \(work)/tansu.log)") }
            usleep(100_000)
        }
    }

    func stop() {
        kill(pid, SIGTERM)
        waitExit(pid)
    }
}

/// A dnpipes mount started through the real binary in the background, as a user would.
final class PipeMount {
    let path: String
    private let binary: String
    private(set) var daemon: pid_t = 0

    init(binary: String, path: String, dataDirectory: String, extra: [String] = []) throws {
        self.binary = binary
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try shell(([q(binary), "mount", "--data-dir", q(dataDirectory)] + extra.map(q) + [q(path)]).joined(separator: " "), timeout: 60)
        guard let pid = PipeMount.findDaemon(mountpoint: path) else {
            unmount()
            throw BenchError("mounted \(path), but found no daemon process serving it")
        }
        daemon = pid
    }

    /// The background daemon is this binary run with --foreground and the mount point.
    private static func findDaemon(mountpoint: String) -> pid_t? {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = pid_t(entry), let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let args = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if args.contains("--foreground") && args.contains(mountpoint) && args.contains("mount") { return pid }
        }
        return nil
    }

    /// Creates a pipe and waits until `others` see it (a Kafka mount learns of new topics from metadata).
    func makePipe(_ name: String, visibleOn others: [PipeMount] = []) throws {
        try shell("mkfifo \(q(path + "/" + name))", timeout: 30)
        for other in others {
            let deadline = monotonicNow() + 15
            while access(other.path + "/" + name, F_OK) != 0 {
                guard monotonicNow() < deadline else { throw BenchError("pipe \(name) did not appear on \(other.path)") }
                usleep(50_000)
            }
        }
    }

    /// Unmounts once (the embedded mount goes as soon as it is measured, and again in the teardown).
    func unmount() {
        guard !unmounted else { return }
        unmounted = true
        _ = try? shell("\(q(binary)) unmount \(q(path))", timeout: 60)
    }
    private var unmounted = false
}

/// A file of `lines` lines of exactly `lineBytes` bytes each (plus the newline): a sequence number, then
/// filler, so that readers can check order and nothing compresses to nothing.
func makeDataFile(_ path: String, lines: Int, lineBytes: Int) throws {
    guard FileManager.default.createFile(atPath: path, contents: nil), let out = FileHandle(forWritingAtPath: path) else { throw BenchError("cannot write \(path)") }
    defer { try? out.close() }
    let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)
    var chunk = [UInt8]()
    chunk.reserveCapacity(1 << 20)
    var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
    for i in 0..<lines {
        let number = Array(String(format: "%010d ", i).utf8)
        chunk.append(contentsOf: number.prefix(lineBytes))
        for _ in number.count..<max(lineBytes, number.count) {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            chunk.append(alphabet[Int(seed >> 58) % alphabet.count])
        }
        chunk.append(UInt8(ascii: "\n"))
        if chunk.count >= 1 << 20 { out.write(Data(chunk)); chunk.removeAll(keepingCapacity: true) }
    }
    out.write(Data(chunk))
}

/// `dnpipes-fuse-ceiling` (Sources/dnpipes-fuse-ceiling) mounted at `path`, serving a copy of `file` from
/// memory as `path/f`: the most a read through FUSE gets on this machine, with the options of a `.drain`.
final class FuseCeiling {
    let path: String
    private let pid: pid_t
    private var stopped = false

    init(binary: String, path: String, file: String) throws {
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw BenchError("no dnpipes-fuse-ceiling binary at \(binary)") }
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        pid = try spawn([binary, path, file])
        let size = (try FileManager.default.attributesOfItem(atPath: file)[.size] as? NSNumber)?.int64Value ?? -1
        for _ in 0..<200 {
            if let served = try? FileManager.default.attributesOfItem(atPath: path + "/f")[.size] as? NSNumber,
               served.int64Value == size { return }
            usleep(50_000)
        }
        stop()
        throw BenchError("dnpipes-fuse-ceiling did not serve \(file) at \(path) within 10 s")
    }

    /// Unmounts (which ends the server's loop) and waits for the server to exit.
    func stop() {
        guard !stopped else { return }
        stopped = true
        if umount2(path, 0) != 0 { kill(pid, SIGTERM) }
        _ = waitExit(pid)
    }
}
