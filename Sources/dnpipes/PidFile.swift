import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A daemon's pid, filed under its mount point, so that `dnpipes unmount` can wait until the daemon has
/// made everything durable and exited (and a remount right after finds the data directory free).
enum PidFile {
    static var directory: String {
        if getuid() == 0 { return "/run/dnpipes" }
        if let xdg = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], !xdg.isEmpty { return xdg + "/dnpipes" }
        return NSTemporaryDirectory() + "dnpipes-\(getuid())"
    }

    static func path(for mountpoint: String) -> String {
        directory + "/" + mountpoint.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "/", with: "%2F") + ".pid"
    }

    static func write(for mountpoint: String) {
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try? "\(getpid())\n".write(toFile: path(for: mountpoint), atomically: true, encoding: .utf8)
    }

    static func remove(for mountpoint: String) {
        guard read(for: mountpoint) == getpid() else { return }
        unlink(path(for: mountpoint))
    }

    static func read(for mountpoint: String) -> pid_t? {
        (try? String(contentsOfFile: path(for: mountpoint), encoding: .utf8))
            .flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Waits for the daemon of a mount point to exit; false if it is still running after `seconds`.
    static func waitForExit(of pid: pid_t, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if kill(pid, 0) != 0 && errno == ESRCH { return true }
            // An exited daemon its parent has not reaped yet is gone too.
            if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
               let close = stat.lastIndex(of: ")"), stat[stat.index(close, offsetBy: 2)] == "Z" { return true }
            usleep(20_000)
        }
        return false
    }
}
