import XCTest

/// The embedded store's disk fills up under a writer: the writer is told (EIO at its close, and at a later
/// write, with a log line naming the pipe and the cause), only whole messages are stored, in order and
/// without a gap, and the mount goes on serving.
final class DiskFullTests: MountTestCase {
    override var mountsInSetUp: Bool { false }
    /// The log lives off the full disk.
    override var logFile: String { root + "/daemon.log" }

    override func setUpWithError() throws {
        try super.setUpWithError()
        ok("mount -t tmpfs -o size=4m dnpipes-test-full \"$DATA\"")
        try mount(["--log-file", logFile])
    }

    override func tearDownWithError() throws {
        unmountAll()
        shell("umount \(quote(data)) 2>/dev/null || umount -l \(quote(data)) 2>/dev/null || true", timeout: 10)
        try super.tearDownWithError()
    }

    func testDiskFullFailsTheWriterAndStoresOnlyWholeMessagesInOrder() {
        // About 9.6 MB of records (40-byte lines, 8 bytes of header each) for a 4 MiB disk.
        let out = ok("""
        python3 - <<'PY'
        import os
        fd = os.open('p', os.O_WRONLY | os.O_CREAT)
        failed = None
        try:
            for i in range(0, 200000, 1000):
                os.write(fd, b''.join(b'%039d\\n' % j for j in range(i, i + 1000)))
        except OSError as e:
            failed = 'write: ' + e.strerror
        try:
            os.close(fd)
        except OSError as e:
            failed = failed or 'close: ' + e.strerror
        print(failed)
        PY
        """, timeout: 60)
        XCTAssertTrue(out.contains("Input/output error"), "the writer must learn that its messages were not stored: \(out)")
        XCTAssertTrue(log.contains("pipe=p") && log.contains("No space left on device"), log)

        // What is stored is whole messages 0, 1, 2, ... with nothing torn.
        let check = ok("""
        python3 - <<'PY'
        data = open('.drain/p', 'rb').read()
        lines = data.split(b'\\n')
        assert lines[-1] == b'', 'a torn last line'
        lines = lines[:-1]
        for n, line in enumerate(lines):
            assert line == b'%039d' % n, 'line %d is %r' % (n, line[:50])
        print(len(lines) > 0, len(lines) < 200000)
        PY
        """, timeout: 60)
        XCTAssertEqual(check, "True True\n")

        // The mount still serves once there is room again.
        ok("rm p")
        XCTAssertEqual(ok("echo fine > q; cat .drain/q"), "fine\n")
    }
}
