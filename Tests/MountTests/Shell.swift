import Foundation
import XCTest

/// The result of a shell script run by a test.
struct ShellResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var lines: [String] { stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast(stdout.hasSuffix("\n") ? 1 : 0).map(String.init) }
}

/// Runs `bash -c script` under `timeout`, so that a hung mount fails the test instead of hanging the suite.
@discardableResult
func shell(_ script: String, cwd: String? = nil, env: [String: String] = [:], timeout seconds: Int = 60,
           file: StaticString = #filePath, line: UInt = #line) -> ShellResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
    // Descriptors the test process holds (Foundation keeps one per child to learn of its exit) must not
    // leak into what the script leaves running in the background, or waiting for this script would wait
    // for those too.
    let closeInherited = "for fd in $(ls /proc/$$/fd); do case $fd in 0|1|2) ;; *) eval \"exec $fd>&-\" ;; esac; done\n"
    p.arguments = ["-k", "5", String(seconds), "bash", "-o", "pipefail", "-c", closeInherited + script]
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    var environment = ProcessInfo.processInfo.environment
    for (k, v) in env { environment[k] = v }
    p.environment = environment
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch {
        XCTFail("cannot run bash: \(error)", file: file, line: line)
        return ShellResult(status: -1, stdout: "", stderr: "")
    }
    // Read both pipes concurrently so a chatty script cannot block on a full pipe.
    // @unchecked Sendable: each is written by one reading thread and read after that thread is joined.
    final class Collected: @unchecked Sendable { var data = Data() }
    let stderrData = Collected()
    let group = DispatchGroup()
    group.enter()
    let stdoutData = Collected()
    DispatchQueue.global().async { stderrData.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    group.enter()
    DispatchQueue.global().async { stdoutData.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    p.waitUntilExit()
    // A process the script left running in the background with its output still open would hold the
    // pipes forever: bound the wait instead of hanging the suite.
    if group.wait(timeout: .now() + 10) == .timedOut {
        XCTFail("the script ended but left a background process holding its output open (redirect it): \(script.prefix(200))",
                file: file, line: line)
        return ShellResult(status: p.terminationStatus, stdout: "", stderr: "")
    }
    if p.terminationStatus == 124 {
        XCTFail("script timed out after \(seconds)s: \(script.prefix(200))", file: file, line: line)
    }
    return ShellResult(status: p.terminationStatus, stdout: String(decoding: stdoutData.data, as: UTF8.self),
                       stderr: String(decoding: stderrData.data, as: UTF8.self))
}

/// The directory holding the built products (the `dnpipes` binary sits beside the test bundle).
var productsDirectory: URL {
    if let override = ProcessInfo.processInfo.environment["DNPIPES_BIN"] {
        return URL(fileURLWithPath: override).deletingLastPathComponent()
    }
    for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
        return bundle.bundleURL.deletingLastPathComponent()
    }
    return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

var dnpipesBinary: String { productsDirectory.appendingPathComponent("dnpipes").path }
