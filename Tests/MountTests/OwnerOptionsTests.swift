import Foundation
import XCTest

/// `-o uid=,gid=,mode=`: a mount made by root presents its pipes as another user's and group's, and the
/// kernel holds other users to those bits (allow_other brings default_permissions).
final class OwnerOptionsTests: MountTestCase {
    override var mountsInSetUp: Bool { false }

    func testOwnerAndModeApplyToPipesAndDirectories() throws {
        chmod(root, 0o755)
        try mount(["-o", "allow_other,uid=1000,gid=2000,mode=0664"])
        let r = shell("""
        cd "$MNT" && setpriv --reuid=1000 --regid=1000 --clear-groups sh -c 'mkfifo p && echo mine > p'
        stat -c '%a %u %g' "$MNT" "$MNT/p" "$MNT/.drain" "$MNT/.drain/p"
        setpriv --reuid=1001 --regid=2000 --clear-groups sh -c 'echo group > "$MNT/p" && cat "$MNT/.drain/p"'
        setpriv --reuid=1002 --regid=1002 --clear-groups sh -c 'echo other > "$MNT/p"' 2>&1 | grep -o 'Permission denied'
        """, env: ["MNT": mnt], timeout: 60)
        XCTAssertEqual(r.stdout, "775 1000 2000\n664 1000 2000\n775 1000 2000\n444 1000 2000\nmine\ngroup\nPermission denied\n", r.stderr)
    }

    func testBadOwnerOptionsAreRefused() throws {
        for (option, message) in [("mode=999", "option mode needs octal permission bits"), ("uid=alice", "option uid needs a numeric id"),
                                  ("gid=", "option gid needs a numeric id")] {
            let r = shell("\(quote(dnpipesBinary)) mount \(quote(mnt)) --data-dir \(quote(data)) -o \(option)", timeout: 30)
            XCTAssertNotEqual(r.status, 0, option)
            XCTAssertTrue(r.stderr.contains(message), "\(option): \(r.stderr)")
            XCTAssertEqual(shell("grep -c ' \(mnt) ' /proc/self/mounts", timeout: 10).stdout, "0\n", "\(option) mounted")
        }
    }
}
