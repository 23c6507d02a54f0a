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
        throw ValidationError("cannot unmount \(mountpoint): \(String(cString: strerror(err)))")
    }
}
