import XCTest

/// A `.drain` view whose byte positions are all known is read through the kernel's page cache (up to 16 MiB;
/// a longer one with direct I/O): a shell loop over it takes its lines from the cache, and what it shows is
/// always the pipe as it is at the open, after pushes and after a reset that leaves the pipe as long as before.
final class DrainCacheTests: MetricsMountTestCase {
    private func readRequests() -> Double {
        value(#"dnpipes_fuse_requests_total{op="read"}"#, in: scrape()) ?? 0
    }

    func testReadLoopOverADrainTakesItsLinesFromThePageCache() {
        ok(#"""
        python3 -c 'import sys; sys.stdout.write("".join("%079d\n" % i for i in range(5000)))' > "$ROOT/src"
        cat "$ROOT/src" > p
        """#, timeout: 60)
        let before = readRequests()
        let out = ok(#"""
        while IFS= read -r l; do printf '%s\n' "$l"; done < .drain/p | cmp - "$ROOT/src" && echo same
        """#, timeout: 120)
        XCTAssertEqual(out, "same\n")
        // 400 KB: without the cache bash's loop would ask the daemon for every one of its 5,000 lines.
        let reads = readRequests() - before
        XCTAssertGreaterThan(reads, 0)
        XCTAssertLessThan(reads, 100, "read requests for 5,000 lines: \(reads)")
    }

    func testADrainLongerThanTheCacheLimitIsReadWithDirectIO() {
        // 17 MiB of 80-byte lines: over the 16 MiB up to which drains go through the page cache.
        ok(#"""
        python3 -c 'import sys; sys.stdout.write("".join("%079d\n" % i for i in range(17 * 1024 * 1024 // 80 + 1)))' > "$ROOT/src"
        cat "$ROOT/src" > p
        """#, timeout: 120)
        XCTAssertEqual(ok(#"cmp .drain/p "$ROOT/src" && echo same"#, timeout: 120), "same\n")
        let before = readRequests()
        let out = ok(#"""
        n=0; while [ $n -lt 2000 ] && IFS= read -r l; do n=$((n + 1)); done < .drain/p; echo "$n $l"
        """#, timeout: 120)
        XCTAssertEqual(out, String(format: "2000 %079d\n", 1999))
        // Each of bash's reads (4 KiB, then a seek back to the line's end) reaches the daemon.
        let reads = readRequests() - before
        XCTAssertGreaterThanOrEqual(reads, 2000, "read requests for 2,000 lines: \(reads)")
    }

    func testADrainShowsThePipeAsItIsAfterPushesAndAfterAReset() {
        let out = ok(#"""
        lines() { python3 -c 'import sys; sys.stdout.write("".join("%s%078d\n" % (sys.argv[1], i) for i in range(3000)))' "$1"; }
        lines a > "$ROOT/a"; lines b > "$ROOT/b"; lines c > "$ROOT/c"
        cat "$ROOT/a" > p
        cmp .drain/p "$ROOT/a" && echo a
        # The same size again, other bytes: nothing of the first stream may show.
        truncate -s 0 p
        cat "$ROOT/b" > p
        cmp .drain/p "$ROOT/b" && echo b
        cat "$ROOT/c" > p
        cat "$ROOT/b" "$ROOT/c" | cmp .drain/p - && echo bc
        # A drain open before the push ends where the pipe ended at its open.
        exec 3< .drain/p
        echo d > p
        cat "$ROOT/b" "$ROOT/c" | cmp - <(cat <&3) && echo bc-at-open
        exec 3<&-
        tail -n 1 .drain/p
        """#, timeout: 120)
        XCTAssertEqual(out, "a\nb\nbc\nbc-at-open\nd\n")
    }

    func testConcurrentDrainsAndSeeksReadTheSameBytes() {
        let out = ok(#"""
        python3 -c 'import sys; sys.stdout.write("".join("%d\n" % i for i in range(200000)))' > "$ROOT/src"
        cat "$ROOT/src" > p
        for i in 1 2 3 4; do cmp .drain/p "$ROOT/src" > "$ROOT/cmp$i" 2>&1 & done; wait
        cat "$ROOT"/cmp1 "$ROOT"/cmp2 "$ROOT"/cmp3 "$ROOT"/cmp4
        python3 - "$ROOT/src" <<'PY'
        import os, random, sys
        want = open(sys.argv[1], "rb").read()
        fd = os.open(".drain/p", os.O_RDONLY)
        rng = random.Random(7)
        for _ in range(300):
            at = rng.randrange(len(want)); n = rng.randrange(1, 20000)
            got = os.pread(fd, n, at)
            assert got == want[at:at + n], (at, n, len(got))
        print("seeks", os.fstat(fd).st_size == len(want))
        PY
        """#, timeout: 120)
        XCTAssertEqual(out, "seeks True\n")
    }
}
