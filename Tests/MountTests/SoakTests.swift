import XCTest

/// A bounded soak run on the embedded store: concurrent writers, readers that come and go (some ended with
/// SIGINT while they wait), resets, and then exact counts, and a daemon whose memory, threads and
/// descriptors stay flat.
final class SoakTests: MountTestCase {
    func testSoakWritersReadersResetsAndInterrupts() { soak() }
    override func tearDownWithError() throws {
        stopSoakReaders()
        try super.tearDownWithError()
    }
}

/// The same soak run on Kafka.
final class SoakTestsOnKafka: MountTestCase {
    override class var backend: Backend { .kafka }
    func testSoakWritersReadersResetsAndInterrupts() { soak() }
    override func tearDownWithError() throws {
        stopSoakReaders()
        try super.tearDownWithError()
    }
}

extension MountTestCase {
    /// The daemon's resident memory in KiB, its threads and its open descriptors.
    fileprivate func daemonUsage(file: StaticString = #filePath, line: UInt = #line) -> (rssKiB: Int, threads: Int, fds: Int)? {
        let pid = daemonPID
        guard !pid.isEmpty else { XCTFail("no daemon pid", file: file, line: line); return nil }
        let out = ok("""
        awk '/^VmRSS:/ { print $2 } /^Threads:/ { print $2 }' /proc/\(pid)/status
        ls /proc/\(pid)/fd | wc -l
        """, file: file, line: line)
        let n = out.split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard n.count == 3 else { XCTFail("cannot read the daemon's usage: \(out)", file: file, line: line); return nil }
        return (n[0], n[1], n[2])
    }

    /// Stops the long-lived reader the soak run starts (tearDown, whatever happened).
    fileprivate func stopSoakReaders() {
        guard !root.isEmpty else { return }
        shell("test -f \(quote(root))/full.pid && kill -KILL $(cat \(quote(root))/full.pid) 2>/dev/null; true", timeout: 10)
    }

    /// One round of load for `seconds`: three writers on `a` (10-line batches, single lines, 50-line batches,
    /// each line `wK-N` with N counting up from 1 across rounds), a writer and a reset loop on `r`, readers of
    /// `a` ended by SIGINT after a random time and restarted, `head` readers that end by themselves, `.tail`
    /// readers, readers and drains of `r`. Every reader's output is checked as it ends; anything wrong goes
    /// to $ROOT/errors. The round returns once every process it started has ended.
    fileprivate func soakRound(seconds: Int, file: StaticString = #filePath, line: UInt = #line) {
        ok("""
        end=$((EPOCHSECONDS + \(seconds)))
        alive() { [ $EPOCHSECONDS -lt $end ]; }
        fail() { echo "$*" >> "$ROOT/errors"; }
        # Complete lines of a reader's output (a reader ended by a signal may stop inside a message).
        complete() { if [ -n "$(tail -c 1 "$1")" ]; then sed '$d' "$1"; else cat "$1"; fi; }
        # Each writer's lines in order without gaps; from its first line when $2 is "start".
        check_a() {
          complete "$1" | awk -v f="$1" -v start="$2" -F- '
            !/^w[123]-[0-9]+$/ { print f ": foreign line " $0; exit 1 }
            { n = $2 + 0
              if ($1 in last) { if (n != last[$1] + 1) { print f ": " $0 " after " $1 "-" last[$1]; exit 1 } }
              else if (start == "start" && n != 1) { print f ": first line of " $1 " is " $0; exit 1 }
              last[$1] = n }' >> "$ROOT/errors"
        }
        # Lines of r rise: a reset skips messages but never brings old ones back.
        check_r() {
          complete "$1" | awk -v f="$1" -F- '
            !/^r-[0-9]+$/ { print f ": foreign line " $0; exit 1 }
            { n = $2 + 0; if (n <= last) { print f ": r-" n " after r-" last; exit 1 } last = n }' >> "$ROOT/errors"
        }

        ( n=$(cat "$ROOT/w1.count" 2>/dev/null || echo 0)
          while alive; do
            /usr/bin/printf 'w1-%d\\n' $(seq $((n + 1)) $((n + 10))) >> a || { fail "w1: push of $((n + 1)) failed"; break; }
            n=$((n + 10)); sleep 0.02
          done
          echo $n > "$ROOT/w1.count" ) &
        ( n=$(cat "$ROOT/w2.count" 2>/dev/null || echo 0)
          while alive; do
            /bin/echo "w2-$((n + 1))" >> a || { fail "w2: push of $((n + 1)) failed"; break; }
            n=$((n + 1)); sleep 0.01
          done
          echo $n > "$ROOT/w2.count" ) &
        ( n=$(cat "$ROOT/w3.count" 2>/dev/null || echo 0)
          while alive; do
            seq -f 'w3-%.0f' $((n + 1)) $((n + 50)) >> a || { fail "w3: push of $((n + 1)) failed"; break; }
            n=$((n + 50)); sleep 0.1
          done
          echo $n > "$ROOT/w3.count" ) &
        ( n=$(cat "$ROOT/r.count" 2>/dev/null || echo 0)
          while alive; do
            /bin/echo "r-$((n + 1))" >> r || { fail "r: push of $((n + 1)) failed"; break; }
            n=$((n + 1)); sleep 0.02
          done
          echo $n > "$ROOT/r.count" ) &
        ( while alive; do
            sleep 1.$((RANDOM % 10))
            truncate -s 0 r || fail "reset of r failed"
          done ) &
        # Readers of a from its start, ended by SIGINT while they read or wait, and started again.
        for k in 1 2; do
          ( while alive; do
              timeout -s INT 0.$((RANDOM % 8 + 2)) cat a > "$ROOT/int$k.out" 2> "$ROOT/int$k.err"
              st=$?; [ $st = 124 ] || fail "SIGINT reader $k ended with status $st: $(cat "$ROOT/int$k.err")"
              check_a "$ROOT/int$k.out" start
            done ) &
        done
        # Readers that end by themselves.
        ( while alive; do
            head -n 3000 a > "$ROOT/head.out" || fail "head reader failed"
            [ "$(wc -l < "$ROOT/head.out")" = 3000 ] || fail "head reader got $(wc -l < "$ROOT/head.out") lines"
            check_a "$ROOT/head.out" start
            sleep 0.3
          done ) &
        # Readers of what is pushed from now on.
        ( while alive; do
            timeout -s INT 1.$((RANDOM % 10)) cat .tail/a > "$ROOT/tail.out"
            [ $? = 124 ] || fail "tail reader did not wait"
            check_a "$ROOT/tail.out" any
          done ) &
        # Readers and drains of the pipe that is reset.
        ( while alive; do
            timeout -s INT 2 cat r > "$ROOT/r-reader.out"
            [ $? = 124 ] || fail "reader of r did not wait"
            check_r "$ROOT/r-reader.out"
            cat .drain/r > "$ROOT/r-drain.out" || fail "drain of r failed"
            check_r "$ROOT/r-drain.out"
          done ) &
        wait
        """, timeout: seconds + 90, file: file, line: line)
    }

    fileprivate func soak(file: StaticString = #filePath, line: UInt = #line) {
        ok("""
        mkfifo a r
        : > "$ROOT/errors"
        # A reader for the whole run. It must not keep descriptors of this script's caller (the test would
        # wait for it), so it closes every inherited one above stderr first.
        ( for fd in /proc/$BASHPID/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null
          exec cat a > "$ROOT/full.out" 2> "$ROOT/full.err" ) &
        echo $! > "$ROOT/full.pid"
        """, file: file, line: line)

        // Warm-up: whatever the daemon allocates for good (thread pools, buffers, clients) is there after it.
        soakRound(seconds: 12, file: file, line: line)
        sleep(3)
        let warm = daemonUsage(file: file, line: line)
        soakRound(seconds: 60, file: file, line: line)
        sleep(3)
        let end = daemonUsage(file: file, line: line)

        let errors = (try? String(contentsOfFile: root + "/errors", encoding: .utf8)) ?? "(no errors file)"
        XCTAssertEqual(errors, "", "problems seen during the run", file: file, line: line)

        // Every acknowledged line of a, once, each writer's in order; the reader that ran throughout got
        // exactly the same.
        let counts = ok("cat \"$ROOT/w1.count\" \"$ROOT/w2.count\" \"$ROOT/w3.count\"", file: file, line: line)
            .split(separator: "\n").compactMap { Int($0) }
        XCTAssertEqual(counts.count, 3, file: file, line: line)
        let total = counts.reduce(0, +)
        XCTAssertGreaterThan(total, 1000, "the writers hardly wrote", file: file, line: line)
        let verdict = ok("""
        cat .drain/a > "$ROOT/drain.out"
        wc -l < "$ROOT/drain.out"
        grep -cvE '^w[123]-[0-9]+$' "$ROOT/drain.out" || true
        for w in 1 2 3; do
          grep "^w$w-" "$ROOT/drain.out" | cut -d- -f2 | cmp -s - <(seq 1 $(cat "$ROOT/w$w.count")) || echo "writer $w: lines lost, doubled or out of order"
        done
        for i in $(seq 300); do [ "$(wc -l < "$ROOT/full.out")" -ge \(total) ] && break; sleep 0.1; done
        cmp "$ROOT/full.out" "$ROOT/drain.out" && echo "full reader same"
        """, timeout: 120, file: file, line: line)
        XCTAssertEqual(verdict, "\(total)\n0\nfull reader same\n", file: file, line: line)

        // The pipe that was reset: after a last reset and a final batch, exactly that batch.
        let final = ok("""
        truncate -s 0 r
        seq -f 'final-%.0f' 1 500 > r
        cat .drain/r | cmp - <(seq -f 'final-%.0f' 1 500) && echo "final batch only"
        """, file: file, line: line)
        XCTAssertEqual(final, "final batch only\n", file: file, line: line)

        print("soak (\(Self.backend)): \(counts) lines pushed to a; daemon rss KiB, threads, fds: \(String(describing: warm)) -> \(String(describing: end))")
        if let warm, let end {
            let grown = end.rssKiB - warm.rssKiB
            XCTAssertLessThan(grown, 16 * 1024, "resident memory grew by \(grown) KiB: \(warm) -> \(end)", file: file, line: line)
            XCTAssertLessThanOrEqual(end.threads, warm.threads + 8, "threads grew: \(warm) -> \(end)", file: file, line: line)
            XCTAssertLessThanOrEqual(end.fds, warm.fds + 2, "descriptors grew: \(warm) -> \(end)", file: file, line: line)
        }
        // Still serving.
        ok("echo after-soak > p", file: file, line: line)
        XCTAssertEqual(ok("cat .drain/p", file: file, line: line), "after-soak\n", file: file, line: line)
    }
}
