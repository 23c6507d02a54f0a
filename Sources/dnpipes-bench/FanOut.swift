import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// N concurrent readers of one pipe on one mount, each a separate process reading every message in order.
/// While all of them are open (each has read everything and holds the file), the daemon's peak resident
/// memory and threads, and its connections to the broker, are read from /proc.
struct FanOut {
    let broker: Broker
    let writerMount: PipeMount
    let readerMount: PipeMount
    let data: String
    let messages: Int
    let counts: [Int]

    func run() throws -> (rows: [FanOutRow], checks: [String: Bool]) {
        try writerMount.makePipe("fanout", visibleOn: [readerMount])
        try shell("head -n \(messages) \(q(data)) > \(q(writerMount.path + "/fanout"))")
        let path = readerMount.path + "/fanout"
        // One unreported reader first, so that every row finds the pipe's stream already started.
        _ = try startReaders(1, path: path).1()
        var rows: [FanOutRow] = []
        for n in counts {
            let sampler = PeakSampler(pid: readerMount.daemon)
            let (elapsed, release) = try startReaders(n, path: path)
            let connections = ProcessStats.connections(of: readerMount.daemon, toPort: broker.port)
            let peak = sampler.stop()
            release()
            guard let peak else { throw BenchError("cannot read /proc of the daemon \(readerMount.daemon)") }
            let first = rows.first
            let perExtra = first.flatMap { f in n > f.readers ? Double(peak.residentKiB - f.residentKiB) / Double(n - f.readers) : nil }
            rows.append(FanOutRow(readers: n, messagesPerSecond: Double(n * messages) / elapsed, residentKiB: peak.residentKiB,
                                  residentPerExtraReaderKiB: perExtra, threads: peak.threads, brokerConnections: connections))
            progress("fan-out \(n) readers: \(fmt(elapsed)) s, RSS \(peak.residentKiB) KiB, \(peak.threads) threads, \(connections) broker connections")
        }
        var checks: [String: Bool] = [:]
        if let one = rows.first(where: { $0.readers == 1 }), let many = rows.first(where: { $0.readers == 64 }) {
            checks["64 readers: <= 512 KiB resident per extra reader"] = (many.residentPerExtraReaderKiB ?? .infinity) <= 512
            checks["64 readers: broker connections independent of readers (\(one.brokerConnections) -> \(many.brokerConnections))"] =
                many.brokerConnections == one.brokerConnections
            // A blocked read holds no thread; FUSE workers come and go with concurrent requests, at most 16.
            let most = rows.filter { $0.readers >= 64 }.map(\.threads).max() ?? many.threads
            checks["threads bounded: at most 16 FUSE workers more than 1 reader needs (\(one.threads) -> \(most))"] =
                most <= one.threads + 16
        }
        return (rows, checks)
    }

    /// Starts `n` reader processes and waits until each has read `messages` lines. Returns the elapsed time
    /// and a function that lets them close and exit.
    private func startReaders(_ n: Int, path: String) throws -> (Double, () -> Void) {
        var report: [Int32] = [0, 0], hold: [Int32] = [0, 0]
        guard pipe(&report) == 0, pipe(&hold) == 0 else { throw BenchError("pipe failed") }
        let me = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var pids: [pid_t] = []
        let release = {
            close(hold[1])
            for pid in pids { waitExit(pid) }
        }
        let start = monotonicNow()
        do {
            for _ in 0..<n {
                pids.append(try spawn(["/usr/bin/timeout", "-k", "5", "600", me, "reader", path, String(messages)],
                                      stdin: hold[0], stdout: report[1]))
            }
        } catch { release(); throw error }
        close(report[1]); close(hold[0])
        defer { close(report[0]) }
        var done = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        var text = ""
        while done < n {
            let got = read(report[0], &buffer, buffer.count)
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { release(); throw BenchError("only \(done) of \(n) readers finished") }
            text += String(decoding: buffer[0..<got], as: UTF8.self)
            while let nl = text.firstIndex(of: "\n") {
                let line = String(text[..<nl])
                text = String(text[text.index(after: nl)...])
                guard line == "ok" else { release(); throw BenchError("a reader failed: \(line)") }
                done += 1
            }
        }
        return (monotonicNow() - start, release)
    }
}

/// The reader process of the fan-out run: reads `count` lines from `path`, checking that their sequence
/// numbers go 0, 1, 2, ..., says "ok" on stdout, then keeps the file open until stdin closes.
func readLines(path: String, count: Int) -> Int32 {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { print("open \(path): \(String(cString: strerror(errno)))"); return 1 }
    var buffer = [UInt8](repeating: 0, count: 1 << 17)
    var seen = 0
    var number = 0
    var atLineStart = true
    var digits = 0
    outer: while seen < count {
        let n = read(fd, &buffer, buffer.count)
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { print("read after \(seen) lines: \(n < 0 ? String(cString: strerror(errno)) : "end of file")"); return 1 }
        for i in 0..<n {
            let b = buffer[i]
            if b == UInt8(ascii: "\n") {
                if number != seen { print("line \(seen) carries number \(number)"); return 1 }
                seen += 1
                number = 0; digits = 0; atLineStart = true
                if seen == count { break outer }
            } else if atLineStart {
                if b >= 48 && b <= 57 && digits < 10 { number = number * 10 + Int(b - 48); digits += 1 } else { atLineStart = false }
            }
        }
    }
    print("ok")
    fflush(nil)
    var byte: UInt8 = 0
    while read(0, &byte, 1) > 0 {}
    close(fd)
    return 0
}
