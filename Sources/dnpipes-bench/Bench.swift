import ArgumentParser
import CRdKafka
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dnpipes-bench",
        abstract: "Measures dnpipes next to its peers in one run: kcat, plain librdkafka clients, a plain file.",
        subcommands: [Run.self, Reader.self],
        defaultSubcommand: Run.self
    )
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a tansu broker, mount, and measure (needs root for FUSE, kcat and tansu on PATH).")

    @Option(help: "Lines in the push and pull file.") var lines = 1_000_000
    @Option(help: "Bytes per line, without the newline.") var lineBytes = 100
    @Option(help: "Rounds of each throughput measurement (medians are reported).") var rounds = 3
    @Option(help: "Messages in the latency measurement.") var latencyMessages = 1000
    @Option(help: "Reader counts for the fan-out measurement.") var readers = "1,16,64,256"
    @Option(help: "Messages every fan-out reader reads.") var fanoutMessages = 100_000
    @Option(help: "Measurements to run.") var only = "push,latency,fanout,embedded,programs,workqueue,scale"
    @Option(help: "Where to write the results as JSON.") var json = "bench-results.json"
    @Option(help: "The dnpipes binary (default: next to this one).") var dnpipes: String?
    @Option(help: "The kcat binary.") var kcat = "kcat"

    func run() throws {
        let wanted = Set(only.split(separator: ",").map(String.init))
        let counts = readers.split(separator: ",").compactMap { Int($0) }
        let me = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let binary = dnpipes ?? ((me as NSString).deletingLastPathComponent + "/dnpipes")
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw BenchError("no dnpipes binary at \(binary)") }
        // kcat is the peer of the push and pull rows only; the others run without it.
        let kcatPath = try? shellOutput("command -v \(q(kcat))")
        guard kcatPath != nil || wanted.isDisjoint(with: ["push", "pull"]) else { throw BenchError("no \(kcat) on PATH") }
        let work = try shellOutput("mktemp -d /tmp/dnpipes-bench.XXXXXX")
        let teardown = Teardown()
        teardown.add { _ = try? shell("rm -rf \(q(work))") }
        Teardown.onSignals(teardown)
        defer { teardown.run() }

        progress("writing \(lines) lines of \(lineBytes) bytes")
        let data = work + "/lines"
        try makeDataFile(data, lines: lines, lineBytes: lineBytes)

        var comparisons: [Comparison] = []
        var fanOut: [FanOutRow] = []
        var checks: [String: Bool] = [:]
        // The embedded store first, before the broker holds gigabytes and the Kafka daemons run beside it.
        if !wanted.isDisjoint(with: ["embedded", "programs", "workqueue"]) {
            let e = try PipeMount(binary: binary, path: work + "/mnt-e", dataDirectory: work + "/data-e")
            teardown.add { e.unmount() }
            if wanted.contains("embedded") {
                comparisons += try EmbeddedThroughput(mount: e, scratch: work, data: data, lines: lines, rounds: rounds,
                                                      ceiling: (me as NSString).deletingLastPathComponent + "/dnpipes-fuse-ceiling").run()
            }
            if wanted.contains("programs") {
                comparisons += try ProgramThroughput(mount: e, scratch: work, rounds: rounds).run()
            }
            if wanted.contains("workqueue") {
                comparisons.append(try WorkQueueThroughput(backend: "embedded", mounts: [e], rounds: rounds).run())
            }
            e.unmount()
        }
        if wanted.contains("scale") {
            comparisons += try ScaleRows(binary: binary, work: work, rounds: rounds).run()
        }
        if !wanted.isDisjoint(with: ["push", "pull", "latency", "fanout", "workqueue"]) {
            let broker = try Broker(work: work)
            teardown.add { broker.stop() }
            progress("tansu on \(broker.address)")
            let a = try PipeMount(binary: binary, path: work + "/mnt-a", dataDirectory: work + "/data-a", extra: ["--brokers", broker.address])
            teardown.add { a.unmount() }
            let b = try PipeMount(binary: binary, path: work + "/mnt-b", dataDirectory: work + "/data-b", extra: ["--brokers", broker.address])
            teardown.add { b.unmount() }
            if !wanted.isDisjoint(with: ["push", "pull"]) {
                comparisons += try KafkaThroughput(broker: broker, writerMount: a, readerMount: b, data: data, lines: lines,
                                                   rounds: rounds, kcat: kcatPath!).run()
            }
            if wanted.contains("latency") {
                comparisons += try Latency(broker: broker, writerMount: a, readerMount: b, messages: latencyMessages).run()
            }
            if wanted.contains("workqueue") {
                comparisons.append(try WorkQueueThroughput(backend: "Kafka, 2 hosts", mounts: [a, b], rounds: rounds).run())
            }
            if wanted.contains("fanout") {
                (fanOut, checks) = try FanOut(broker: broker, writerMount: a, readerMount: b, data: data,
                                              messages: min(fanoutMessages, lines), counts: counts).run()
            }
        }

        let report = Report(machine: machine(kcat: kcatPath), settings: [
            "lines": String(lines), "lineBytes": String(lineBytes), "rounds": String(rounds),
            "latencyMessages": String(latencyMessages), "fanoutMessages": String(min(fanoutMessages, lines)),
            "readers": readers, "dnpipes": binary,
        ], comparisons: comparisons, fanOut: fanOut, fanOutChecks: checks)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        print(formatTable(report), terminator: "")
        print("machine: " + report.machine.sorted(by: { $0.key < $1.key }).map { "\($0.key)=\($0.value)" }.joined(separator: "; "))
        print("results written to \(json)")
    }

    private func machine(kcat: String?) -> [String: String] {
        var m: [String: String] = [:]
        m["cpu"] = (try? shellOutput("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"))?.trimmingCharacters(in: .whitespaces)
        m["cores"] = try? shellOutput("nproc")
        m["memory"] = try? shellOutput("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
        m["kernel"] = try? shellOutput("uname -r")
        m["librdkafka"] = String(cString: rd_kafka_version_str())
        m["kcat"] = kcat.flatMap { try? shellOutput("\(q($0)) -V | grep -o 'Version [0-9.]*'") }
        m["broker"] = try? shellOutput("tansu --version 2>&1 | head -n1")
        return m
    }
}

struct Reader: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "One fan-out reader (started by the benchmark).", shouldDisplay: false)
    @Argument var path: String
    @Argument var count: Int
    func run() throws {
        let status = readLines(path: path, count: count)
        if status != 0 { throw ExitCode(status) }
    }
}

/// Undoes the run's set-up in reverse order, also on SIGINT and SIGTERM, so no mount or broker is left.
// @unchecked Sendable: `steps` is guarded by `lock`.
final class Teardown: @unchecked Sendable {
    private let lock = NSLock()
    private var steps: [() -> Void] = []
    /// Set once, from the main thread, before any signal can arrive.
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    func add(_ step: @escaping () -> Void) {
        lock.lock(); steps.append(step); lock.unlock()
    }

    func run() {
        lock.lock()
        let todo = steps.reversed()
        steps = []
        lock.unlock()
        todo.forEach { $0() }
    }

    static func onSignals(_ teardown: Teardown) {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { teardown.run(); exit(128 + sig) }
            source.resume()
            sources.append(source)
        }
    }
}
