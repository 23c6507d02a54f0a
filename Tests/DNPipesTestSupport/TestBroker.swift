import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real Kafka-protocol broker (tansu, memory storage) on a free loopback port, started once per test
/// process by the first test that needs it, and stopped when the process exits. Its lifetime is bounded by
/// `timeout` even if that exit is missed.
/// Sendable: every stored property is a constant set in `init`, and `Process` is only read after it started.
public final class TestBroker: @unchecked Sendable {
    public static let shared = TestBroker()

    public let port: Int
    public let process: Process?
    /// Why there is no broker, or nil when it listens.
    public let failure: String?
    public var address: String { "127.0.0.1:\(port)" }

    private init() {
        port = freeLoopbackPort()
        guard let tansu = findExecutable("tansu") else {
            process = nil
            failure = "the tansu broker is not installed (scripts/setup --test installs it)"
            return
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        p.arguments = ["7200", tansu, "broker", "--listener-url", "tcp://127.0.0.1:\(port)",
                       "--advertised-listener-url", "tcp://127.0.0.1:\(port)"]
        let logPath = NSTemporaryDirectory() + "dnpipes-tansu-\(port).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: logPath)
        p.standardError = FileHandle(forWritingAtPath: logPath)
        do { try p.run() } catch {
            process = nil
            failure = "cannot start tansu: \(error)"
            return
        }
        process = p
        brokerPID = p.processIdentifier
        atexit { if brokerPID > 0 { kill(brokerPID, SIGTERM) } }
        // Ready once it accepts connections.
        let deadline = Date().addingTimeInterval(20)
        var ready = false
        while Date() < deadline && !ready {
            ready = canConnect(port: port)
            if !ready { usleep(100_000) }
        }
        failure = ready ? nil : "tansu did not listen on port \(port) within 20 s (log: \(logPath))"
    }
}

/// Written once, when the broker starts (the first test to need it), before the `atexit` handler that
/// reads it can run.
nonisolated(unsafe) private var brokerPID: pid_t = 0

/// The path of an executable on PATH, or nil.
public func findExecutable(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}
