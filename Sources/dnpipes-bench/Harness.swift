import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Small process and /proc helpers. Children are started with posix_spawn and every inherited descriptor
/// above stderr closed, so that a background daemon never holds one of the benchmark's pipes open.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Quotes a word for bash.
func q(_ word: String) -> String { "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'" }

/// glibc (2.34+) has it, but its header hides it from Swift.
@_silgen_name("posix_spawn_file_actions_addclosefrom_np")
private func addCloseFrom(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ from: Int32) -> Int32

func spawn(_ argv: [String], stdin: Int32? = nil, stdout: Int32? = nil, stderr: Int32? = nil) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let stdin { posix_spawn_file_actions_adddup2(&actions, stdin, 0) }
    if let stdout { posix_spawn_file_actions_adddup2(&actions, stdout, 1) }
    if let stderr { posix_spawn_file_actions_adddup2(&actions, stderr, 2) }
    _ = addCloseFrom(&actions, 3)
    var pid: pid_t = 0
    let cArgs = argv.map { strdup($0) } + [nil]
    defer { cArgs.forEach { free($0) } }
    let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, environ)
    guard rc == 0 else { throw BenchError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
    return pid
}

/// Waits for a child; returns its exit status (128 + signal when killed).
@discardableResult
func waitExit(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}

/// Runs a bash command (bounded by `timeout` seconds) and returns its wall-clock time. Fails on a non-zero
/// exit, so a benchmark step that did not do its work never yields a number.
@discardableResult
func shell(_ command: String, timeout: Int = 900) throws -> Double {
    let start = monotonicNow()
    let pid = try spawn(["/usr/bin/timeout", "-k", "5", String(timeout), "/bin/bash", "-c", "set -o pipefail; " + command])
    let status = waitExit(pid)
    let elapsed = monotonicNow() - start
    guard status == 0 else { throw BenchError("`\(command)` exited with status \(status)") }
    return elapsed
}

/// Runs a bash command and returns its standard output, trimmed.
func shellOutput(_ command: String, timeout: Int = 900) throws -> String {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw BenchError("pipe failed") }
    let pid = try spawn(["/usr/bin/timeout", "-k", "5", String(timeout), "/bin/bash", "-c", "set -o pipefail; " + command],
                        stdout: fds[1])
    close(fds[1])
    var output = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fds[0], &buffer, buffer.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        output.append(contentsOf: buffer[0..<n])
    }
    close(fds[0])
    let status = waitExit(pid)
    guard status == 0 else { throw BenchError("`\(command)` exited with status \(status)") }
    return String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}


/// Resident memory, threads and broker connections of a process, read from /proc.
struct ProcessStats: Codable {
    var residentKiB: Int
    var threads: Int

    init?(pid: pid_t) {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func field(_ name: String) -> Int? {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return nil }
            return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "")
        }
        guard let rss = field("VmRSS"), let threads = field("Threads") else { return nil }
        residentKiB = rss
        self.threads = threads
    }

    /// Established TCP connections of `pid` whose remote port is `port`.
    static func connections(of pid: pid_t, toPort port: Int) -> Int {
        var inodes = Set<String>()
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count > 9, f[3] == "01", let remotePort = f[2].split(separator: ":").last,
                      Int(remotePort, radix: 16) == port else { continue }
                inodes.insert(String(f[9]))
            }
        }
        let fdDir = "/proc/\(pid)/fd"
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: fdDir)) ?? []
        return fds.filter { fd in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fdDir)/\(fd)"),
                  target.hasPrefix("socket:[") else { return false }
            return inodes.contains(String(target.dropFirst(8).dropLast()))
        }.count
    }
}

/// Samples a process's resident memory and threads until stopped, keeping the peaks.
// @unchecked Sendable: the peaks are guarded by its lock.
final class PeakSampler: @unchecked Sendable {
    private let pid: pid_t
    private let lock = NSLock()
    private var peak = ProcessStats(pid: 0)
    private var running = true
    private let done = DispatchSemaphore(value: 0)

    init(pid: pid_t) {
        self.pid = pid
        Thread.detachNewThread { [self] in
            while isRunning {
                if let s = ProcessStats(pid: pid) { record(s) }
                usleep(20_000)
            }
            done.signal()
        }
    }

    private var isRunning: Bool { lock.lock(); defer { lock.unlock() }; return running }

    private func record(_ s: ProcessStats) {
        lock.lock(); defer { lock.unlock() }
        if var p = peak {
            p.residentKiB = max(p.residentKiB, s.residentKiB)
            p.threads = max(p.threads, s.threads)
            peak = p
        } else {
            peak = s
        }
    }

    func stop() -> ProcessStats? {
        if let s = ProcessStats(pid: pid) { record(s) }
        lock.lock(); running = false; lock.unlock()
        done.wait()
        lock.lock(); defer { lock.unlock() }
        return peak
    }
}
