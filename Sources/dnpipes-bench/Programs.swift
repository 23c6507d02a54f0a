import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Ordinary programs on pipes of the embedded store against the same programs on a plain file: a bash loop
/// reading line by line (bash reads a seekable file in blocks and seeks back, anything else a byte per read),
/// and a Python program making one write(2) per line. Each side times only its own loop, from inside, so
/// that starting bash or Python does not dilute the ratio.
struct ProgramThroughput {
    let mount: PipeMount
    let scratch: String
    let rounds: Int
    let readLines = 20_000
    let writeLines = 100_000
    let lineBytes = 80

    func run() throws -> [Comparison] {
        let data = scratch + "/program-lines"
        try makeDataFile(data, lines: readLines, lineBytes: lineBytes)
        // Filled once: a drain reads every message without taking any away.
        try mount.makePipe("read-loop")
        try shell("cat \(q(data)) > \(q(mount.path + "/read-loop"))")
        var readFS = [Double](), readFile = [Double](), writeFS = [Double](), writeFile = [Double]()
        for r in 0..<rounds {
            let viaFS = { readFS.append(try readLoop(mount.path + "/.drain/read-loop")) }
            let viaFile = { readFile.append(try readLoop(data)) }
            if r % 2 == 0 { try viaFS(); try viaFile() } else { try viaFile(); try viaFS() }
            progress("read loop round \(r + 1)/\(rounds): dnpipes \(fmt(readFS.last!)) s, file \(fmt(readFile.last!)) s")
        }
        for r in 0..<rounds {
            let pipe = mount.path + "/writes-\(r)", plain = scratch + "/writes-\(r)"
            try mount.makePipe("writes-\(r)")
            // The pipe's close returns once its messages are durable, so the file gets an fsync before its close.
            let viaFS = { writeFS.append(try lineWriter(to: pipe, fsync: false)) }
            let viaFile = { writeFile.append(try lineWriter(to: plain, fsync: true)) }
            if r % 2 == 0 { try viaFS(); try viaFile() } else { try viaFile(); try viaFS() }
            for path in [mount.path + "/.drain/writes-\(r)", plain] {
                let count = try shellOutput("wc -l < \(q(path))")
                guard Int(count) == writeLines else { throw BenchError("\(path) holds \(count) lines, expected \(writeLines)") }
            }
            progress("line writes round \(r + 1)/\(rounds): dnpipes \(fmt(writeFS.last!)) s, file+fsync \(fmt(writeFile.last!)) s")
            // Both sides start each round with the same amount of data on disk.
            unlink(plain)
            try shell("rm \(q(pipe))")
        }
        try shell("rm \(q(mount.path + "/read-loop"))")
        unlink(data)
        return [
            throughput("shell read loop", peer: "same loop on a plain file", lines: readLines, dnpipes: readFS, peer: readFile,
                       atLeast: 0.25),
            throughput("line-buffered writes", peer: "same program to a file + fsync", lines: writeLines, dnpipes: writeFS,
                       peer: writeFile, atLeast: nil),
        ]
    }

    /// `while IFS= read -r` over `path`, counting lines, so that a read that stops early fails rather than
    /// looking fast. The time covers the redirection's open and the loop.
    private func readLoop(_ path: String) throws -> Double {
        let script = "s=$EPOCHREALTIME; n=0; while IFS= read -r l; do n=$((n + 1)); done < \(q(path)); e=$EPOCHREALTIME; echo \"$n $s $e\""
        let out = try shellOutput(script).split(separator: " ").map(String.init)
        guard out.count == 3, let start = Double(out[1]), let end = Double(out[2]) else { throw BenchError("read loop printed \(out)") }
        guard Int(out[0]) == readLines else { throw BenchError("read loop over \(path) read \(out[0]) lines, expected \(readLines)") }
        return end - start
    }

    /// `python3 -u` writing `writeLines` lines of `lineBytes` bytes to stdout redirected to `path`, one write(2)
    /// per line; the time covers the writes and the close (after an fsync, if asked). It comes back on stderr.
    private func lineWriter(to path: String, fsync: Bool) throws -> Double {
        let program = """
            import os, sys, time
            n, sync = int(sys.argv[1]), sys.argv[2] == "fsync"
            fill = "x" * \(lineBytes - 11)
            out = sys.stdout.write
            start = time.monotonic()
            for i in range(n):
                out("%010d %s\\n" % (i, fill))
            if sync:
                os.fsync(1)
            os.close(1)
            sys.stderr.write("%.6f\\n" % (time.monotonic() - start))
            sys.stderr.flush()
            os._exit(0)
            """
        let out = try shellOutput("python3 -u -c \(q(program)) \(writeLines) \(fsync ? "fsync" : "close") 2>&1 > \(q(path))")
        guard let elapsed = Double(out) else { throw BenchError("line writer to \(path) printed \(out)") }
        return elapsed
    }
}
