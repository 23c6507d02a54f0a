import DNPipesTestSupport
import Foundation
import XCTest

/// A real `dnpipes-csi` on a unix socket in a fresh temporary directory, against the test broker, driven by
/// an independent CSI client (Python's grpcio, Tests/csi-client/csi_client.py) as kubelet drives it. Target
/// paths have kubelet's layout under `kubelet/`. `tearDown` kills the plugin, unmounts whatever is mounted
/// under the directory and stops its daemons, whatever happened in the test.
class CSIPluginTestCase: XCTestCase {
    var root = ""
    var socket: String { root + "/plugin/csi.sock" }
    var state: String { root + "/state" }
    var pluginLog: String { root + "/plugin.log" }
    /// A topic prefix of this test's own on the shared broker.
    let topicPrefix = "csi\(UInt32.random(in: 0...UInt32.max))-"
    var broker: TestBroker!
    private(set) var plugin: Process?
    static let nodeID = "node-a"

    static var pluginBinary: String { productsDirectory.appendingPathComponent("dnpipes-csi").path }
    static var clientScript: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("csi-client/csi_client.py").path
    }

    override func setUpWithError() throws {
        try super.setUpWithError()
        continueAfterFailure = true
        broker = try KafkaBroker.require()
        guard shell("python3 -c 'import grpc, grpc_tools'", timeout: 30).status == 0 else {
            XCTFail("Python grpcio and grpcio-tools are not installed (scripts/setup --test installs them)")
            throw XCTSkip("no grpcio")
        }
        var buffer = Array((NSTemporaryDirectory() + "dnpipes-csi-XXXXXX").utf8CString)
        guard mkdtemp(&buffer) != nil else { throw XCTSkip("mkdtemp failed") }
        root = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        // Other users (the pods' non-root processes) must reach the target paths below.
        chmod(root, 0o755)
        try startPlugin()
    }

    override func tearDownWithError() throws {
        stopPlugin()
        if !root.isEmpty {
            shell("""
            for m in $(awk -v r="\(root)/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r); do
              umount -l "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true
            done
            pkill -KILL -f -- "--[d]ata-dir \(root)/" || true
            """, timeout: 30)
            try? FileManager.default.removeItem(atPath: root)
        }
        try super.tearDownWithError()
    }

    /// Starts the plugin (bounded by `timeout`) and waits until it answers Probe with ready.
    /// `arguments` replace the usual ones (the socket, node id and state directory of this test).
    func startPlugin(arguments: [String]? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        p.arguments = ["600", Self.pluginBinary] + (arguments ?? ["--endpoint", "unix://" + socket, "--node-id", Self.nodeID,
                                                                  "--state-dir", state]) + ["--dnpipes", dnpipesBinary]
        if !FileManager.default.fileExists(atPath: pluginLog) { _ = FileManager.default.createFile(atPath: pluginLog, contents: nil) }
        let log = FileHandle(forWritingAtPath: pluginLog)
        log?.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        p.standardInput = FileHandle.nullDevice
        try p.run()
        plugin = p
        for _ in 0..<200 {
            if FileManager.default.fileExists(atPath: socket), let r = try? call("Identity.Probe", timeout: 10),
               r.status == 0, r.output.contains("\"ready\": true") { return }
            guard p.isRunning else { break }
            usleep(100_000)
        }
        XCTFail("the plugin did not answer Probe with ready within 20 s: \(pluginOutput)", file: file, line: line)
        throw XCTSkip("no plugin")
    }

    /// The plugin's first process (the child of its `timeout` wrapper).
    var pluginPID: Int32? {
        guard let p = plugin else { return nil }
        return Int32(shell("pgrep -P \(p.processIdentifier) -f dnpipes-csi", timeout: 10).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The gRPC server's pid: the child of the plugin's first process (its supervisor).
    var serverPID: Int32? {
        guard let supervisor = pluginPID else { return nil }
        return Int32(shell("pgrep -P \(supervisor) -x dnpipes-csi", timeout: 10).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Kills the plugin's first process with SIGKILL: its server dies with it and nothing of the plugin runs
    /// on, as when its container is killed.
    func killPlugin() {
        if let pid = pluginPID { kill(pid, SIGKILL) }
        plugin?.waitUntilExit()
        plugin = nil
    }

    func stopPlugin() {
        guard let p = plugin else { return }
        if let pid = pluginPID { kill(pid, SIGTERM) }
        let deadline = Date().addingTimeInterval(10)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        if p.isRunning { killPlugin() } else { p.waitUntilExit() }
        plugin = nil
    }

    var pluginOutput: String { (try? String(contentsOfFile: pluginLog, encoding: .utf8)) ?? "" }

    /// One CSI call: status 0 and the response as JSON, or 3 and "CODE message".
    func call(_ method: String, _ request: [String: Any] = [:], timeout: Int = 60) throws -> (status: Int32, output: String) {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: request), as: UTF8.self)
        let r = shell("python3 \(quote(Self.clientScript)) --socket \(quote(socket)) --cache \(quote(root + "/stubs")) "
                      + "\(quote(method)) \(quote(json))", timeout: timeout)
        return (r.status, r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) + r.stderr)
    }

    /// A call that must succeed; returns the response.
    @discardableResult
    func ok(_ method: String, _ request: [String: Any] = [:], file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let r = try call(method, request)
        XCTAssertEqual(r.status, 0, "\(method) failed: \(r.output)\nplugin: \(pluginOutput.suffix(2000))", file: file, line: line)
        return (try? JSONSerialization.jsonObject(with: Data(r.output.utf8))) as? [String: Any] ?? [:]
    }

    /// A call that must fail with `code`; returns the message.
    @discardableResult
    func fails(_ method: String, _ request: [String: Any], with code: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try call(method, request)
        XCTAssertEqual(r.status, 3, "\(method) should fail with \(code): \(r.output)", file: file, line: line)
        XCTAssertTrue(r.output.hasPrefix(code + " "), "\(method) should fail with \(code), got: \(r.output)", file: file, line: line)
        return r.output
    }

    /// A target path as kubelet makes them.
    func target(pod: String = "0b1e6c1a-pod", volume: String = "pipes") -> String {
        root + "/kubelet/pods/\(pod)/volumes/kubernetes.io~csi/\(volume)/mount"
    }

    /// A NodePublishVolume request for the test broker, as kubelet sends it for a PersistentVolume.
    func publishRequest(volume: String = "pipes-volume", target: String, readonly: Bool = false, fsGroup: String? = nil,
                        context: [String: String] = [:], secrets: [String: String] = [:], mountFlags: [String] = []) -> [String: Any] {
        var mount: [String: Any] = ["mount_flags": mountFlags]
        if let fsGroup { mount["volume_mount_group"] = fsGroup }
        var volumeContext = ["brokers": broker.address, "topicPrefix": topicPrefix,
                             "csi.storage.k8s.io/pod.name": "app-0", "csi.storage.k8s.io/pod.namespace": "default"]
        for (k, v) in context { volumeContext[k] = v }
        return ["volume_id": volume, "target_path": target, "readonly": readonly,
                "volume_capability": ["mount": mount, "access_mode": ["mode": "MULTI_NODE_MULTI_WRITER"]],
                "volume_context": volumeContext, "secrets": secrets]
    }

    /// What is mounted at a path ("" for nothing), from the mount table.
    func mountType(_ path: String) -> String {
        shell("awk -v p=\(quote(path)) '$2 == p { t = $3 } END { print t }' /proc/self/mounts", timeout: 10).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs a script as a non-root user (`user` is setpriv's --reuid/--regid/--groups arguments).
    func asUser(_ script: String, uid: Int = 1000, gid: Int = 1000, groups: [Int] = [], in directory: String,
                file: StaticString = #filePath, line: UInt = #line) -> ShellResult {
        let groupArgs = groups.isEmpty ? "--clear-groups" : "--groups=" + groups.map(String.init).joined(separator: ",")
        return shell("cd \(quote(directory)) && exec setpriv --reuid=\(uid) --regid=\(gid) \(groupArgs) bash -c \(quote(script))",
                     timeout: 60, file: file, line: line)
    }

    /// `dnpipes pull` of a pipe of this test's prefix, up to its current end.
    func pull(_ pipe: String) -> String {
        shell("\(quote(dnpipesBinary)) pull \(quote(pipe)) --brokers \(broker.address) --topic-prefix \(topicPrefix) --exit-at-end",
              timeout: 60).stdout
    }
}
