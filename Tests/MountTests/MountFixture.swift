import DNPipesTestSupport
import Foundation
import XCTest

/// A real dnpipes mount on a fresh temporary directory, driven through the real binary. `tearDown`
/// unmounts and stops the daemon whatever happened in the test.
class MountTestCase: XCTestCase {
    /// The temporary root: `mnt/` is the mount point, `data/` the embedded store.
    var root = ""
    var mnt: String { root + "/mnt" }
    var data: String { root + "/data" }
    var logFile: String { data + "/dnpipes.log" }
    /// Which backend the mounts of this class use. The filesystem contract tests run once per backend:
    /// `DNPIPES_TEST_BACKEND=kafka` runs them on a Kafka-protocol broker (scripts/test does both).
    class var backend: Backend {
        ProcessInfo.processInfo.environment["DNPIPES_TEST_BACKEND"] == "kafka" ? .kafka : .embedded
    }
    enum Backend { case embedded, kafka }
    var isKafka: Bool { Self.backend == .kafka }
    /// A topic prefix of this test's own, so tests sharing one broker never see each other's pipes.
    private(set) var topicPrefix = ""
    /// Arguments that select the backend for `dnpipes mount` and the pipe commands.
    var backendArguments: [String] {
        guard isKafka else { return [] }
        return ["--brokers", KafkaBroker.shared.address, "--topic-prefix", topicPrefix]
    }
    /// Extra arguments for `dnpipes mount` (a subclass may add options).
    var mountArguments: [String] { [] }
    /// The longest pipe name: Kafka's 249 characters include the topic prefix.
    var maxNameLength: Int { 249 - topicPrefix.count }
    /// Whether setUp mounts; tests that mount themselves turn it off.
    var mountsInSetUp: Bool { true }

    override func setUpWithError() throws {
        try super.setUpWithError()
        continueAfterFailure = true
        let template = NSTemporaryDirectory() + "dnpipes-test-XXXXXX"
        var buffer = Array(template.utf8CString)
        guard mkdtemp(&buffer) != nil else { throw XCTSkip("mkdtemp failed") }
        root = text(of: buffer)
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        if isKafka {
            _ = try KafkaBroker.require()
            topicPrefix = "t\(UInt32.random(in: 0...UInt32.max))-"
        }
        if mountsInSetUp { try mount() }
    }

    override func tearDownWithError() throws {
        unmountAll()
        if !root.isEmpty { try? FileManager.default.removeItem(atPath: root) }
        try super.tearDownWithError()
    }

    /// Mounts `mnt` (on `data` unless other arguments say otherwise) and waits until it is ready.
    func mount(_ extra: [String] = [], at mountpoint: String? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let args = ["mount", mountpoint ?? mnt, "--data-dir", data] + backendArguments + mountArguments + extra
        let r = shell(([dnpipesBinary] + args).map(quote).joined(separator: " "), timeout: 60)
        guard r.status == 0 else {
            XCTFail("mount failed (\(r.status)): \(r.stdout)\(r.stderr)", file: file, line: line)
            throw XCTSkip("not mounted")
        }
    }

    /// Unmounts every dnpipes mount under the test root and stops their daemons.
    func unmountAll() {
        guard !root.isEmpty else { return }
        shell("""
        for m in $(awk -v r="\(root)/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts); do
          "\(dnpipesBinary)" unmount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
        # Daemons still running (a test may have killed the mount's user, not the daemon): stop them.
        for pid in $(pgrep -f -- "--data-dir \(data)( |$)" || true); do kill -TERM "$pid" 2>/dev/null || true; done
        for i in $(seq 50); do pgrep -f -- "--data-dir \(data)( |$)" >/dev/null || break; sleep 0.1; done
        pkill -KILL -f -- "--data-dir \(data)( |$)" || true
        """, timeout: 30)
    }

    /// The daemon's pid (from the pid file it keeps under its mount point's name).
    var daemonPID: String {
        let name = mnt.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "/", with: "%2F")
        return (try? String(contentsOfFile: "/run/dnpipes/\(name).pid", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    /// Runs a script in the mount point with MNT, DATA and DNPIPES set.
    @discardableResult
    func sh(_ script: String, timeout: Int = 60, file: StaticString = #filePath, line: UInt = #line) -> ShellResult {
        shell(script, cwd: mnt, env: ["MNT": mnt, "DATA": data, "DNPIPES": dnpipesBinary, "ROOT": root,
                                      "BACKEND": backendArguments.joined(separator: " ")],
              timeout: timeout, file: file, line: line)
    }

    /// Runs a script that must succeed, and returns its standard output.
    @discardableResult
    func ok(_ script: String, timeout: Int = 60, file: StaticString = #filePath, line: UInt = #line) -> String {
        let r = sh(script, timeout: timeout, file: file, line: line)
        XCTAssertEqual(r.status, 0, "script failed: \(script)\nstdout: \(r.stdout)\nstderr: \(r.stderr)", file: file, line: line)
        return r.stdout
    }

    /// Waits (bounded) until a shell condition holds.
    func eventually(_ condition: String, seconds: Int = 15, file: StaticString = #filePath, line: UInt = #line) {
        let r = sh("for i in $(seq \(seconds * 10)); do \(condition) && exit 0; sleep 0.1; done; exit 1", timeout: seconds + 10)
        XCTAssertEqual(r.status, 0, "never true: \(condition)", file: file, line: line)
    }

    var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }

    /// Runs `command` in the mount, sends it SIGINT (as Ctrl-C would) after `seconds`, and returns its exit
    /// status (124 when the signal ended it) and how long it took to end, in tenths of a second.
    func interrupted(_ command: String, after seconds: String = "0.5", file: StaticString = #filePath,
                     line: UInt = #line) -> (status: Int, tenths: Int) {
        let out = sh("""
        start=$(date +%s%N)
        timeout -s INT \(seconds) \(command) 2>/dev/null; status=$?
        echo "$status $(( ($(date +%s%N) - start) / 100000000 ))"
        """, timeout: 60, file: file, line: line).stdout
        let f = out.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        guard f.count == 2 else { XCTFail("no status from \(command): \(out)", file: file, line: line); return (-1, 99) }
        return (f[0], f[1])
    }

    /// Writes each chunk (a Python bytes expression) with one write() on one handle of `pipe`, and returns a
    /// line per chunk: "accepted" or the name of the errno the write got; then "close: " and what close() said.
    func writeEach(_ chunks: [String], to pipe: String = "p", file: StaticString = #filePath, line: UInt = #line) -> String {
        ok("""
        python3 - <<'PY'
        import errno, os
        fd = os.open("\(pipe)", os.O_WRONLY)
        for data in (\(chunks.joined(separator: ", ")),):
            try:
                os.write(fd, data); print("accepted")
            except OSError as e:
                print(errno.errorcode[e.errno])
        try:
            os.close(fd); print("close: ok")
        except OSError as e:
            print("close: " + errno.errorcode[e.errno])
        PY
        """, timeout: 30, file: file, line: line)
    }
}

func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
