import XCTest

/// Mounting, unmounting, remounting, crashes of the daemon, and who may use a mount.
final class LifecycleTests: MountTestCase {
    func testUnmountAndRemountKeepEveryMessage() throws {
        ok("seq 1 5000 > p; mkfifo empty; echo x > q; truncate -s 0 q; echo y > q")
        XCTAssertEqual(shell("\(quote(dnpipesBinary)) unmount \(quote(mnt))").status, 0)  // not from inside the mount
        XCTAssertFalse(ok("cat /proc/self/mounts").contains(mnt))
        try mount()
        XCTAssertEqual(ok("ls"), "empty\np\nq\n")
        XCTAssertEqual(ok("cmp <(cat .drain/p) <(seq 1 5000) && echo same"), "same\n")
        XCTAssertEqual(ok("cat .drain/q"), "y\n")
    }

    func testAcknowledgedMessagesSurviveAKilledDaemon() throws {
        // close() returned, so the messages are on disk: SIGKILL right after loses none of them.
        ok("for i in $(seq 1 300); do echo $i >> p; done; kill -KILL $(cat \"$DATA/lock\")")
        XCTAssertNotEqual(sh("ls").status, 0, "a dead mount answers ENOTCONN")
        try mount()   // cleans up the dead mount and serves again
        XCTAssertEqual(ok("cmp <(cat .drain/p) <(seq 1 300) && echo same"), "same\n")
    }

    func testSecondMountOfADataDirectoryFails() throws {
        let other = root + "/mnt2"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        let r = sh("\"$DNPIPES\" mount \"$ROOT/mnt2\" --data-dir \"$DATA\"")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("already served by another dnpipes daemon"), r.stderr)
        ok("echo still-served > p")
    }

    func testMountFailsClearlyOnAMissingMountPoint() {
        let r = sh("\"$DNPIPES\" mount \"$ROOT/nowhere\" --data-dir \"$ROOT/d2\"")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("does not exist"), r.stderr)
    }

    func testOtherUsersGetEACCESByDefault() {
        ok("echo secret > p; chmod 755 \"$ROOT\"")
        let r = sh("setpriv --reuid=nobody --regid=nogroup --clear-groups cat \"$MNT/.drain/p\"")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("Permission denied"), r.stderr)
    }
}

/// Mounted in the foreground, the way a service manager runs it, and through the mount(8) helper form.
final class ForegroundTests: MountTestCase {
    override var mountsInSetUp: Bool { false }

    func testForegroundDaemonUnmountsCleanlyOnSIGTERM() {
        let out = ok("""
        "$DNPIPES" mount "$MNT" --data-dir "$DATA" --foreground 2> "$ROOT/fg.log" & daemon=$!
        for i in $(seq 100); do grep -q " $MNT " /proc/self/mounts && break; sleep 0.1; done
        echo hello > "$MNT/p"
        kill -TERM $daemon
        wait $daemon; echo "exit $?"
        grep -c " $MNT " /proc/self/mounts || true
        """, timeout: 30)
        XCTAssertEqual(out, "exit 0\n0\n")
    }

    func testMountHelperFormWithMountOptions() throws {
        ok("\"$DNPIPES\" \"$DATA\" \"$MNT\" -o rw,noatime,_netdev,nofail,max_message=10 && echo 0123456789 > \"$MNT/p\"")
        XCTAssertNotEqual(sh("echo 0123456789a > p").status, 0, "max_message from -o applies")
        XCTAssertEqual(ok("grep \" $MNT \" /proc/self/mounts | cut -d' ' -f1,3"), "dnpipes:\(data) fuse.dnpipes\n")
        let r = sh("\"$DNPIPES\" \"$DATA\" \"$ROOT/x\" -o bogus_option")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("unknown mount option 'bogus_option'"), r.stderr)
    }

    func testAllowOtherEnforcesFileModes() throws {
        try mount(["-o", "allow_other"])
        ok("echo shared > p; chmod 755 \"$ROOT\"")
        XCTAssertEqual(ok("setpriv --reuid=nobody --regid=nogroup --clear-groups cat \"$MNT/.drain/p\""), "shared\n")
        let r = sh("setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c 'echo x > \"$MNT/p\"'")
        XCTAssertTrue(r.stderr.contains("Permission denied"), r.stderr)
        XCTAssertTrue(ok("grep \" $MNT \" /proc/self/mounts").contains("default_permissions"))
    }
}
