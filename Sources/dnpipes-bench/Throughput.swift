import Foundation

/// Push and pull of one file, through the filesystem and through kcat, alternating which goes first.
struct KafkaThroughput {
    let broker: Broker
    let writerMount: PipeMount
    let readerMount: PipeMount
    let data: String
    let lines: Int
    let rounds: Int
    let kcat: String

    func run() throws -> [Comparison] {
        var pushFS = [Double](), pushKcat = [Double](), pullFS = [Double](), pullKcat = [Double]()
        for r in 0..<rounds {
            let pipe = "push-\(r)", topic = "kcat-\(r)"
            try writerMount.makePipe(pipe, visibleOn: [readerMount])
            try writerMount.makePipe(topic)
            let viaFS = { pushFS.append(try shell("cat \(q(data)) > \(q(writerMount.path + "/" + pipe))")) }
            let viaKcat = {
                pushKcat.append(try shell("\(q(kcat)) -P -b \(broker.address) -t \(topic) -X enable.idempotence=true -l \(q(data))"))
            }
            if r % 2 == 0 { try viaFS(); try viaKcat() } else { try viaKcat(); try viaFS() }
            progress("push round \(r + 1)/\(rounds): dnpipes \(fmt(pushFS.last!)) s, kcat \(fmt(pushKcat.last!)) s")
        }
        for r in 0..<rounds {
            // The reading mount has never opened these pipes: every line comes from the broker.
            let viaFS = {
                pullFS.append(try countLines("cat \(q(readerMount.path + "/.drain/push-\(r)"))", expect: lines))
            }
            let viaKcat = {
                pullKcat.append(try countLines("\(q(kcat)) -C -b \(broker.address) -t kcat-\(r) -o beginning -e -q", expect: lines))
            }
            if r % 2 == 0 { try viaFS(); try viaKcat() } else { try viaKcat(); try viaFS() }
            progress("pull round \(r + 1)/\(rounds): dnpipes \(fmt(pullFS.last!)) s, kcat \(fmt(pullKcat.last!)) s")
        }
        return [
            throughput("push 100-byte lines (Kafka)", peer: "kcat -P -l", lines: lines, dnpipes: pushFS, peer: pushKcat, atLeast: 0.8),
            throughput("pull 100-byte lines (Kafka)", peer: "kcat -C -e", lines: lines, dnpipes: pullFS, peer: pullKcat, atLeast: 0.8),
        ]
    }
}

/// The embedded store against a plain local file written and fsynced (dd conv=fsync) and read back.
struct EmbeddedThroughput {
    let mount: PipeMount
    let scratch: String
    let data: String
    let lines: Int
    let rounds: Int
    /// The dnpipes-fuse-ceiling binary: the same lines read through a FUSE server answering from memory.
    let ceiling: String

    func run() throws -> [Comparison] {
        var pushFS = [Double](), pushFile = [Double](), pullFS = [Double](), pullFile = [Double](), pullCeiling = [Double]()
        for r in 0..<rounds {
            try mount.makePipe("embedded-\(r)")
            let plain = scratch + "/plain-\(r)"
            let viaFS = { pushFS.append(try shell("cat \(q(data)) > \(q(mount.path + "/embedded-\(r)"))")) }
            let viaFile = { pushFile.append(try shell("dd if=\(q(data)) of=\(q(plain)) bs=128k conv=fsync status=none")) }
            if r % 2 == 0 { try viaFS(); try viaFile() } else { try viaFile(); try viaFS() }
            let server = try FuseCeiling(binary: ceiling, path: scratch + "/ceiling", file: plain)
            defer { server.stop() }
            // The three reads take turns at going first.
            var reads = [
                { pullFS.append(try countLines("cat \(q(mount.path + "/.drain/embedded-\(r)"))", expect: lines)) },
                { pullFile.append(try countLines("cat \(q(plain))", expect: lines)) },
                { pullCeiling.append(try countLines("cat \(q(server.path + "/f"))", expect: lines)) },
            ]
            reads = Array(reads[(r % 3)...] + reads[..<(r % 3)])
            for read in reads { try read() }
            progress("embedded round \(r + 1)/\(rounds): push \(fmt(pushFS.last!)) s vs file+fsync \(fmt(pushFile.last!)) s; pull \(fmt(pullFS.last!)) s vs file \(fmt(pullFile.last!)) s vs FUSE ceiling \(fmt(pullCeiling.last!)) s")
            server.stop()
            // Both sides start each round with the same amount of data on disk.
            unlink(plain)
            try shell("rm \(q(mount.path + "/embedded-\(r)"))")
        }
        return [
            throughput("push (embedded store)", peer: "plain file + fsync", lines: lines, dnpipes: pushFS, peer: pushFile, atLeast: 0.5),
            throughput("pull (embedded store)", peer: "plain file read", lines: lines, dnpipes: pullFS, peer: pullFile, atLeast: 0.6),
            throughput("pull (embedded store) vs FUSE", peer: "FUSE server answering from memory", lines: lines,
                       dnpipes: pullFS, peer: pullCeiling, atLeast: nil),
        ]
    }
}

/// Times a reading command piped into `wc -l` and checks that every line came through.
func countLines(_ command: String, expect: Int) throws -> Double {
    let start = monotonicNow()
    let count = try shellOutput("\(command) | wc -l")
    let elapsed = monotonicNow() - start
    guard Int(count) == expect else { throw BenchError("`\(command)` gave \(count) lines, expected \(expect)") }
    return elapsed
}

func fmt(_ x: Double) -> String { String(format: "%.2f", x) }

func progress(_ line: String) {
    FileHandle.standardError.write(Data(("bench: " + line + "\n").utf8))
}
