import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The plugin's first process: it runs the gRPC server as a child and starts it again whenever it ends
/// without being asked to, so that a crash of the server is not a restart of the container, which would
/// end every volume's daemon with it. It also reaps the daemons: they are orphans once their `dnpipes
/// mount` command returns, and come to this process (the container's first process, or a subreaper) when
/// they exit. It does nothing else, so that it has little that can fail.
enum Supervisor {
    static let serverVariable = "DNPIPES_CSI_SERVER"

    static var isServer: Bool { getenv(serverVariable) != nil }

    /// Runs the server until a stop signal; exits with the server's last status.
    static func run() -> Never {
        _ = prctl(PR_SET_CHILD_SUBREAPER, 1)
        for sig in [SIGTERM, SIGINT] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { sig in
                stopRequested = 1
                if serverPID > 0 { kill(serverPID, sig) }
            }
            sigaction(sig, &action, nil)
        }
        while true {
            let started = Date()
            serverPID = spawnServer()
            guard serverPID > 0 else { say("cannot start the server: \(String(cString: strerror(errno)))"); exit(1) }
            var status: Int32 = 0
            while true {
                let pid = waitpid(-1, &status, 0)
                if pid == serverPID { break }
                if pid < 0 && errno == ECHILD { break }
                // Otherwise an exited volume daemon, reaped, or a signal.
            }
            serverPID = 0
            let code = exitCode(status)
            if stopRequested != 0 { exit(code) }
            // A command line the server refuses will not get better.
            if code == 64 { exit(code) }
            let ran = Date().timeIntervalSince(started)
            say("the server ended (\(describe(status)) after \(Int(ran)) s); starting it again")
            // A server that failed soon after its start waits 2 s for the next, so that it does not spin.
            usleep(ran < 10 ? 2_000_000 : 200_000)
            if stopRequested != 0 { exit(code) }
        }
    }

    /// In the server: die with the supervisor (a plugin killed as a whole leaves no server behind; the
    /// volume daemons are not affected).
    static func followSupervisor() {
        _ = prctl(PR_SET_PDEATHSIG, UInt(SIGKILL))
        // The supervisor may have died before that took effect.
        if let supervisor = getenv(serverVariable).flatMap({ pid_t(String(cString: $0)) }), getppid() != supervisor { exit(1) }
    }

    private static func spawnServer() -> pid_t {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var argv = CommandLine.arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var environment = ProcessInfo.processInfo.environment
        environment[serverVariable] = String(getpid())
        var envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, nil, nil, &argv, &envp)
        if rc != 0 { errno = rc; return -1 }
        return pid
    }

    private static func exitCode(_ status: Int32) -> Int32 {
        status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    private static func describe(_ status: Int32) -> String {
        status & 0x7f == 0 ? "exit status \((status >> 8) & 0xff)" : "signal \(status & 0x7f)"
    }

    private static func say(_ message: String) {
        FileHandle.standardError.write(Data("dnpipes-csi supervisor: \(message)\n".utf8))
    }
}

/// Set from signal handlers, read by the supervisor's loop (a single-threaded process).
nonisolated(unsafe) private var stopRequested: sig_atomic_t = 0
nonisolated(unsafe) private var serverPID: pid_t = 0

private let PR_SET_PDEATHSIG: Int32 = 1
private let PR_SET_CHILD_SUBREAPER: Int32 = 36

/// prctl(2) with one argument (the C declaration is variadic, which Swift does not import).
@_silgen_name("prctl")
private func prctl(_ option: Int32, _ argument: UInt) -> Int32
