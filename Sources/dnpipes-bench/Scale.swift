import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Many pipes on one embedded mount whose daemon was started under `ulimit -n 1024` (systemd's default for
/// services): 2,000 pipes written and read, then the daemon's descriptors and its memory per pipe once they
/// are idle; then 10,000 pipes, and `ls` of the mount against `ls` of a plain directory of as many files.
struct ScaleRows {
    let binary: String
    let work: String
    let rounds: Int

    func run() throws -> [Comparison] {
        let mnt = work + "/mnt-scale", data = work + "/data-scale", plain = work + "/plain-10000"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let mounted = try shellOutput("ulimit -n 1024; \(q(binary)) mount --data-dir \(q(data)) \(q(mnt))", timeout: 60)
        defer { _ = try? shell("\(q(binary)) unmount \(q(mnt)) || umount -l \(q(mnt))", timeout: 60) }
        // "dnpipes: mounted MNT (daemon pid N, log FILE)"
        let pid = mounted.components(separatedBy: "daemon pid ").last?.prefix { $0.isNumber } ?? ""
        guard let daemon = pid_t(pid), let before = ProcessStats(pid: daemon) else { throw BenchError("no daemon for \(mnt): \(mounted)") }

        progress("scale: 2,000 pipes, each written and read")
        try shell("cd \(q(mnt)) && for i in $(seq 2000); do echo \"message $i\" > p$i; done")
        let read = try shellOutput("cd \(q(mnt)) && for i in $(seq 2000); do cat .drain/p$i; done | wc -l")
        guard Int(read) == 2000 else { throw BenchError("read \(read) messages back from 2,000 pipes") }
        sleep(2)   // the daemon returns freed memory every second
        let descriptors = try Int(shellOutput("ls /proc/\(daemon)/fd | wc -l")) ?? -1
        guard let after = ProcessStats(pid: daemon) else { throw BenchError("the daemon died") }
        let perPipe = Double(after.residentKiB - before.residentKiB) / 2000
        progress("scale: \(descriptors) descriptors, \(fmt(perPipe)) KiB more resident memory per pipe")

        progress("scale: 10,000 pipes, and as many plain files")
        try shell("cd \(q(mnt)) && for i in $(seq 2001 10000); do mkfifo p$i; done")
        try FileManager.default.createDirectory(atPath: plain, withIntermediateDirectories: true)
        try shell("cd \(q(plain)) && for i in $(seq 10000); do : > p$i; done")
        var viaFS = [Double](), viaPlain = [Double]()
        for r in 0..<max(rounds, 5) {
            let fs = { viaFS.append(try timedListing(mnt)) }
            let file = { viaPlain.append(try timedListing(plain)) }
            if r % 2 == 0 { try fs(); try file() } else { try file(); try fs() }
        }
        let lsMillis = median(viaFS) * 1000, plainMillis = median(viaPlain) * 1000
        progress("scale: ls of 10,000 pipes \(fmt(lsMillis)) ms, of 10,000 files \(fmt(plainMillis)) ms")
        return [
            Comparison(name: "descriptors, 2,000 pipes", peerName: "the open-files limit", unit: "descriptors",
                       dnpipes: Double(descriptors), peer: 1024, ratio: Double(descriptors) / 1024, target: "<= 512",
                       pass: descriptors <= 512, dnpipesSamples: [Double(descriptors)], peerSamples: [1024]),
            Comparison(name: "memory per idle pipe", peerName: "the target", unit: "KiB", dnpipes: perPipe, peer: 16,
                       ratio: perPipe / 16, target: "<= 16 KiB", pass: perPipe <= 16, dnpipesSamples: [perPipe], peerSamples: [16]),
            Comparison(name: "ls of 10,000 pipes", peerName: "ls of 10,000 plain files", unit: "ms", dnpipes: lsMillis,
                       peer: plainMillis, ratio: lsMillis / plainMillis, target: "< 100 ms", pass: lsMillis < 100,
                       dnpipesSamples: viaFS.map { $0 * 1000 }, peerSamples: viaPlain.map { $0 * 1000 }),
        ]
    }

    /// `ls` of a directory (names only, as a script lists), counting its lines.
    private func timedListing(_ path: String) throws -> Double {
        let start = monotonicNow()
        let count = try shellOutput("ls \(q(path)) | wc -l")
        let elapsed = monotonicNow() - start
        guard Int(count) == 10_000 else { throw BenchError("ls of \(path) listed \(count) names, expected 10,000") }
        return elapsed
    }
}
