import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Unmount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unmount a pipe directory.",
        discussion: "The daemon makes every acknowledged message durable and exits. Same as umount(8) or fusermount3 -u."
    )

    @Argument(help: "The mount point.")
    var mountpoint: String

    func run() throws {
        let mountpoint = absolute(self.mountpoint)
        let daemon = PidFile.read(for: mountpoint)
        try unmount(mountpoint)
        // Return once the daemon has finished: its messages are durable and its data directory is free.
        if let daemon, !PidFile.waitForExit(of: daemon, seconds: 30) {
            throw CommandError("unmounted \(mountpoint), but its daemon (pid \(daemon)) is still running after 30 s")
        }
    }

    private func unmount(_ mountpoint: String) throws {
        if umount2(mountpoint, 0) == 0 { return }
        let err = errno
        if err == EPERM && getuid() != 0 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/fusermount3")
            p.arguments = ["-u", mountpoint]
            try p.run()
            p.waitUntilExit()
            if p.terminationStatus == 0 { return }
            throw ExitCode(p.terminationStatus)
        }
        throw CommandError("cannot unmount \(mountpoint): \(String(cString: strerror(err)))")
    }
}

/// A failure to report as one line, without the usage text ArgumentParser adds to validation errors.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
