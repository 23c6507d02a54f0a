import XCTest

/// A large pipe on the embedded store: its first open after a mount reads and checks every segment, which
/// takes a while; lookups and opens of other pipes must not wait for it.
final class LargePipeTests: MountTestCase {
    override class var backend: Backend { .embedded }

    func testFirstOpenOfALargePipeDoesNotDelayOtherPipes() throws {
        // Large enough that the first open's scan takes a good fraction of a second even with batches.
        ok("seq 1 6000000 > big; echo x > small", timeout: 180)
        unmountAll()
        try mount()
        // Both times count from the big stat's start: the small one must answer while the big one still reads.
        let out = ok("""
        ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
        start=$(date +%s%N)
        ( stat -c %s big > /dev/null; echo "$(ms $start)" > "$ROOT/big.time" ) &
        sleep 0.05
        stat -c %s small > /dev/null; small=$(ms $start)
        wait
        read -r big < "$ROOT/big.time"
        [ "$big" -gt $((small + 100)) ] && echo "small answered first" || echo "big $big ms, small $small ms"
        """, timeout: 60)
        XCTAssertEqual(out, "small answered first\n")
    }
}

/// A daemon started with a low soft limit on open files (as services are: systemd's default is 1024) takes
/// the hard limit, so many pipes open at once do not fail for want of descriptors.
final class ManyPipesTests: MountTestCase {
    override class var backend: Backend { .embedded }
    override var mountsInSetUp: Bool { false }

    func testADaemonStartedUnderALowSoftLimitServesManyPipes() throws {
        guard let hard = Int(ok("ulimit -Hn").trimmingCharacters(in: .whitespacesAndNewlines)), hard >= 4096 else {
            throw XCTSkip("the hard open-files limit here is below 4096")
        }
        ok("cd /; ulimit -Sn 256; \"$DNPIPES\" mount \"$MNT\" --data-dir \"$DATA\"", timeout: 60)
        let out = ok("""
        for i in $(seq 300); do echo "m$i" > "p$i"; done
        for i in $(seq 300); do cat ".drain/p$i"; done | wc -l
        """, timeout: 120)
        XCTAssertEqual(out, "300\n")
        XCTAssertTrue(log.contains("open files limit raised"), log)
    }

    /// Under `ulimit -n 1024` for both limits (systemd's default for services), 2,000 pipes are written and
    /// read with no failure, while the daemon holds at most 512 descriptors: segment files are opened through
    /// a bounded cache, and an idle pipe keeps none open.
    func testTwoThousandPipesUnderAnOpenFilesLimitOf1024() throws {
        ok("cd /; ulimit -n 1024; \"$DNPIPES\" mount \"$MNT\" --data-dir \"$DATA\"", timeout: 60)
        let pid = daemonPID
        XCTAssertFalse(pid.isEmpty)
        let out = ok("""
        for i in $(seq 2000); do echo "m$i" > "p$i"; done
        for i in $(seq 2000); do cat ".drain/p$i"; done | wc -l
        ls | wc -l
        ls /proc/\(pid)/fd | wc -l
        """, timeout: 300)
        let lines = out.split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        XCTAssertEqual(lines.count, 3, out)
        guard lines.count == 3 else { return }
        XCTAssertEqual(lines[0], 2000, "every message read back")
        XCTAssertEqual(lines[1], 2000, "every pipe listed")
        XCTAssertLessThanOrEqual(lines[2], 512, "descriptors held by the daemon")
        XCTAssertFalse(log.contains("Too many open files"), log)
    }
}
