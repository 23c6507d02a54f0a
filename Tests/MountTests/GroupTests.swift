import DNPipesTestSupport
import XCTest

/// Shell lines that start a reader holding one job of `view` (read, never done) in the background, as
/// `$holder`, and wait until it printed the job to `$ROOT/held`.
func holdingOneJob(_ view: String, wait tenths: Int = 100) -> String {
    """
    python3 -c '
    import time
    f = open("\(view)")
    print(f.readline(), end="", flush=True)
    time.sleep(60)' > "$ROOT/held" 2>/dev/null & holder=$!
    for i in $(seq \(tenths)); do [ -s "$ROOT/held" ] && break; sleep 0.1; done
    """
}

/// Consumer groups on one mount (both backends): `.group/G/PIPE` for loop workers, `.take/G/PIPE` for
/// one-shot takers, with real shells and Python as the workers.
final class GroupTests: MountTestCase {
    override var mountArguments: [String] { ["-o", "max_deliveries=3"] }

    /// Four `while read` workers share the jobs: each job is done once, and each worker does some.
    func testLoopWorkersDoEveryJobOnceAndEachGetsAShare() {
        ok("mkfifo jobs; seq 1 400 > jobs")
        let out = ok("""
        for w in 1 2 3 4; do
          ( while IFS= read -r job; do echo "$job" >> "$ROOT/done.$w"; sleep 0.005; done < .group/workers/jobs ) &
          eval "pid$w=$!"
        done
        for i in $(seq 300); do [ "$(cat "$ROOT"/done.* 2>/dev/null | wc -l)" -ge 400 ] && break; sleep 0.1; done
        # Stopped once the group has done every job: a worker stopped after its last job but before its next
        # read would give that job back, to be done again (at least once).
        for i in $(seq 100); do [ "$(getfattr --only-values -n user.dnpipes.taken .group/workers/jobs)" = 0 ] && break; sleep 0.1; done
        kill $pid1 $pid2 $pid3 $pid4 2>/dev/null; wait 2>/dev/null
        for w in 1 2 3 4; do echo "worker $w: $(wc -l < "$ROOT/done.$w")"; done
        cat "$ROOT"/done.* | sort -n | uniq -d | head -3 | sed 's/^/twice: /'
        echo "distinct: $(cat "$ROOT"/done.* | sort -n | uniq | wc -l)"
        """, timeout: 60)
        XCTAssertTrue(out.contains("distinct: 400\n"), out)
        XCTAssertFalse(out.contains("twice:"), out)
        for w in 1...4 { XCTAssertFalse(out.contains("worker \(w): 0\n"), "worker \(w) got no job: \(out)") }
    }

    /// A group takes nothing from plain readers or from another group.
    func testAnotherGroupAndPlainReadersSeeEveryJob() {
        ok("seq 1 50 > jobs")
        let a = ok("timeout 10 head -n 50 .take/a/jobs | sort -n | tr '\\n' ' '")
        let b = ok("timeout 10 head -n 50 .take/b/jobs | sort -n | tr '\\n' ' '")
        let all = (1...50).map(String.init).joined(separator: " ") + " "
        XCTAssertEqual(a, all)
        XCTAssertEqual(b, all, "a second group starts at the oldest message")
        XCTAssertEqual(ok("cat .drain/jobs | wc -l").trimmingCharacters(in: .whitespaces), "50\n")
        XCTAssertEqual(ok("timeout 2 head -n 1 .take/a/jobs; echo $?"), "124\n", "group a has nothing left: its read waits")
    }

    /// One read returns at most one message, whatever the buffer; a longer message continues on the next
    /// reads. In `.take/` a message is done once its last byte is read.
    func testAReadReturnsAtMostOneMessage() {
        ok("printf 'one\\ntwo\\nthree-is-longer\\n' > p")
        let out = ok("""
        python3 - <<'EOF'
        import os
        fd = os.open(".take/g/p", os.O_RDONLY)
        print(repr(os.read(fd, 65536)), repr(os.read(fd, 65536)))
        print(repr(os.read(fd, 5)), repr(os.read(fd, 5)), repr(os.read(fd, 65536)))
        EOF
        """, timeout: 20)
        XCTAssertEqual(out, "b'one\\n' b'two\\n'\nb'three' b'-is-l' b'onger\\n'\n")
    }

    /// A worker killed while it holds a job (it read it and did not read again) gives it back: another
    /// worker does it.
    func testJobOfAKilledWorkerIsDoneByAnother() {
        ok("printf 'first\\nsecond\\n' > jobs")
        let out = ok("""
        \(holdingOneJob(".group/g/jobs"))
        echo "held: $(cat "$ROOT/held")"
        timeout 10 head -n 1 .take/g/jobs
        kill -9 $holder; wait $holder 2>/dev/null
        timeout 10 head -n 1 .take/g/jobs
        """, timeout: 40)
        XCTAssertEqual(out, "held: first\nsecond\nfirst\n")
    }

    /// In `.group/` a job is done only when its worker reads again: closed first, it goes back.
    func testJobIsDoneAtTheNextReadAndGoesBackIfClosedFirst() {
        ok("printf 'a\\nb\\nc\\n' > jobs")
        // `head -n1` reads one job and closes without reading again: the job goes back.
        XCTAssertEqual(ok("timeout 10 head -n 1 .group/g/jobs"), "a\n")
        XCTAssertEqual(ok("timeout 10 head -n 1 .group/g/jobs"), "a\n")
        // A reader that reads twice has done the first job.
        XCTAssertEqual(ok("timeout 10 head -n 2 .group/g/jobs | head -n 1"), "a\n")
        XCTAssertEqual(ok("timeout 10 head -n 1 .take/g/jobs"), "b\n")
    }

    /// One-shot takers in parallel take distinct jobs.
    func testOneShotTakersTakeDistinctJobs() {
        ok("seq 1 30 > jobs")
        let out = ok("""
        for i in $(seq 30); do ( timeout 20 head -n 1 .take/g/jobs > "$ROOT/take.$i" ) & done; wait
        cat "$ROOT"/take.* | sort -n | uniq | wc -l; cat "$ROOT"/take.* | wc -l
        """, timeout: 40)
        XCTAssertEqual(out.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }, ["30", "30"])
    }

    /// A job given out `max_deliveries` (3 here) times without being done goes to the dead-letter pipe.
    func testPoisonJobEndsInTheDeadLetterPipe() {
        ok("echo poison > jobs")
        for _ in 1...3 { XCTAssertEqual(ok("timeout 10 head -n 1 .group/g/jobs"), "poison\n") }
        XCTAssertEqual(ok("timeout 3 head -n 1 .group/g/jobs; echo $?"), "124\n", "the fourth delivery moves it instead")
        eventually("test -e jobs.dead")
        XCTAssertEqual(ok("cat .drain/jobs.dead"), "poison\n")
        eventually("grep -q 'moved to the dead-letter pipe' \"$DATA/dnpipes.log\"")
        XCTAssertEqual(ok("cat .drain/jobs"), "poison\n", "plain readers still see it")
    }

    func testNonBlockingReadAnswersEAGAINAndABlockedReadAnswersASignal() {
        ok("mkfifo p")
        let out = ok("""
        python3 - <<'EOF'
        import os, errno
        fd = os.open(".group/g/p", os.O_RDONLY | os.O_NONBLOCK)
        try:
            os.read(fd, 100); print("read")
        except BlockingIOError:
            print("EAGAIN")
        EOF
        """, timeout: 20)
        XCTAssertEqual(out, "EAGAIN\n")
        let (status, tenths) = interrupted("cat .group/g/p")
        XCTAssertEqual(status, 124, "the signal ended the blocked read")
        XCTAssertLessThan(tenths, 20)
    }

    /// A reset empties every group too.
    func testResetEmptiesTheGroup() {
        ok("seq 1 5 > jobs")
        XCTAssertEqual(ok("timeout 10 head -n 1 .take/g/jobs"), "1\n")
        ok("truncate -s 0 jobs; echo after > jobs")
        XCTAssertEqual(ok("timeout 10 head -n 1 .take/g/jobs"), "after\n")
    }

    /// `ls .group/` lists groups that read something; `ls .group/G/` lists the pipes; `rmdir` forgets a group,
    /// which then starts from the oldest message again; journals never show as pipes.
    func testGroupsAreListedAndForgotten() {
        ok("printf 'x\\ny\\n' > jobs; mkfifo other")
        XCTAssertEqual(ok("timeout 10 head -n 1 .take/g/jobs"), "x\n")
        XCTAssertEqual(ok("ls .group/"), "g\n")
        XCTAssertEqual(ok("ls .take/"), "g\n")
        XCTAssertEqual(ok("ls .group/g/"), "jobs\nother\n")
        XCTAssertEqual(ok("ls; ls .drain"), "jobs\nother\njobs\nother\n", "a group's journal is not a pipe")
        ok("rmdir .group/g")
        XCTAssertEqual(ok("ls .group/"), "")
        XCTAssertEqual(ok("timeout 10 head -n 1 .take/g/jobs"), "x\n", "a forgotten group starts again")
        XCTAssertNotEqual(sh("mkfifo .group.1.g.jobs2").status, 0, "journal names are not pipe names")
    }

    /// A group's backlog shows as attributes of its view, without reading: free and taken messages.
    func testBacklogShowsAsAttributes() {
        ok("seq 1 6 > jobs")
        XCTAssertEqual(ok("getfattr --only-values -n user.dnpipes.backlog .group/g/jobs"), "6", "a group that never read has everything left")
        XCTAssertEqual(ok("ls .group/"), "", "asking did not make the group")
        XCTAssertEqual(ok("timeout 10 head -n 2 .take/g/jobs"), "1\n2\n")
        // While a reader holds job 3, its mount has the other four claimed ahead for its readers: all taken.
        let out = ok("""
        \(holdingOneJob(".group/g/jobs"))
        echo "$(getfattr --only-values -n user.dnpipes.backlog .group/g/jobs) $(getfattr --only-values -n user.dnpipes.taken .group/g/jobs)"
        kill $holder; wait $holder 2>/dev/null || true
        """, timeout: 40)
        XCTAssertEqual(out, "0 4\n")
        eventually("[ \"$(getfattr --only-values -n user.dnpipes.backlog .group/g/jobs)\" = 4 ]")
        XCTAssertEqual(ok("getfattr --only-values -n user.dnpipes.taken .group/g/jobs"), "0")
        XCTAssertEqual(ok("getfattr -d -m - .take/g/jobs | grep -c user.dnpipes"), "2\n")
    }

    /// Deleting a pipe forgets what groups did with it: a pipe made again under its name starts afresh.
    func testDeletedPipeIsForgottenByItsGroups() {
        ok("echo one > jobs")
        XCTAssertEqual(ok("timeout 10 head -n 1 .take/g/jobs"), "one\n")
        ok("rm jobs; echo again > jobs")
        XCTAssertEqual(ok("timeout 10 head -n 1 .take/g/jobs"), "again\n")
    }

    /// The Kubernetes Job example's worker command, run as four pods would run it (with the pod's /pipes
    /// being this mount): every job is done by exactly one of them, and they all exit once the queue is empty.
    func testKubernetesJobExampleWorkersShareTheQueue() throws {
        ok("seq 1 40 > jobs; mkfifo results")
        let out = ok(#"""
        python3 - "\#(repositoryRoot)/examples/kubernetes/work-queue-job.yaml" "$MNT" <<'PY'
        import subprocess, sys, yaml
        path, mnt = sys.argv[1:3]
        (job,) = [d for d in yaml.safe_load_all(open(path)) if d and d["kind"] == "Job"]
        (c,) = job["spec"]["template"]["spec"]["containers"]
        words = [w.replace("/pipes", mnt) for w in c["command"]]
        pods = [subprocess.Popen(words, stdout=subprocess.PIPE, text=True) for _ in range(job["spec"]["parallelism"])]
        print(sum(int(p.communicate(timeout=60)[0].split()[-2]) for p in pods), "jobs done by", len(pods), "pods")
        PY
        cut -d' ' -f1,2 .drain/results | sort -n | uniq | wc -l
        """#, timeout: 90)
        XCTAssertEqual(out, "40 jobs done by 4 pods\n40\n")
        XCTAssertEqual(ok("awk '$2 != $1 * $1' .drain/results"), "", "every result is right")
    }
}

/// Group state on the embedded store survives the daemon: done marks are kept, and what was out when it was
/// killed goes back to the group.
final class GroupRestartTests: MountTestCase {
    override class var backend: Backend { .embedded }

    func testDoneMarksSurviveSIGKILLAndHeldJobsGoBack() throws {
        ok("seq 1 6 > jobs")
        XCTAssertEqual(ok("timeout 10 head -n 2 .take/g/jobs"), "1\n2\n")
        // A worker holds job 3 (read, not done) when the daemon is killed.
        ok("""
        \(holdingOneJob(".group/g/jobs"))
        """)
        XCTAssertEqual(try String(contentsOfFile: root + "/held", encoding: .utf8), "3\n")
        let pid = daemonPID
        shell("kill -KILL \(pid); for i in $(seq 100); do kill -0 \(pid) 2>/dev/null || exit 0; sleep 0.1; done")
        shell("pkill -KILL -f 'open(\".group/g/jobs\")'; sleep 2")
        try mount()
        XCTAssertEqual(ok("timeout 10 head -n 4 .take/g/jobs"), "3\n4\n5\n6\n", "done jobs stay done; the held one comes back")
        XCTAssertEqual(ok("timeout 2 head -n 1 .take/g/jobs; echo $?"), "124\n")
    }
}

/// Two hosts on one broker share a group through the cluster alone.
final class KafkaGroupTests: TwoHostTestCase {
    override var mountArguments: [String] { ["-o", "group_timeout=3"] }

    /// Four loop workers, two per host, do 2,000 jobs exactly once, and every worker gets a share.
    func testFourWorkersOnTwoHostsDoEveryJobOnce() {
        ok("mkfifo jobs")
        eventually("test -e \"$ROOT/mnt2/jobs\"")
        let out = ok("""
        for w in 1 2 3 4; do
          if [ $w -le 2 ]; then m="$MNT"; else m="$ROOT/mnt2"; fi
          ( while IFS= read -r job; do echo "$job" >> "$ROOT/done.$w"; done < "$m/.group/workers/jobs" ) &
          eval "pid$w=$!"
        done
        seq 1 2000 > jobs
        for i in $(seq 600); do [ "$(cat "$ROOT"/done.* 2>/dev/null | wc -l)" -ge 2000 ] && break; sleep 0.1; done
        # Stopped once neither host's workers hold a job (see the test above).
        for i in $(seq 100); do
          [ "$(getfattr --only-values -n user.dnpipes.taken "$MNT/.group/workers/jobs")" = 0 ] &&
            [ "$(getfattr --only-values -n user.dnpipes.taken "$ROOT/mnt2/.group/workers/jobs")" = 0 ] && break
          sleep 0.1
        done
        kill $pid1 $pid2 $pid3 $pid4 2>/dev/null; wait 2>/dev/null
        for w in 1 2 3 4; do echo "worker $w: $(cat "$ROOT/done.$w" 2>/dev/null | wc -l)"; done
        cat "$ROOT"/done.* | sort -n | uniq -d | head -3 | sed 's/^/twice: /'
        echo "distinct: $(cat "$ROOT"/done.* | sort -n | uniq | wc -l)"
        """, timeout: 120)
        XCTAssertTrue(out.contains("distinct: 2000\n"), out)
        XCTAssertFalse(out.contains("twice:"), out)
        for w in 1...4 { XCTAssertFalse(out.contains("worker \(w): 0\n"), "worker \(w) got no job: \(out)") }
    }

    /// The command line is a member of the same group as mounted readers (on Kafka: the embedded store's
    /// data directory is the daemon's while it is mounted).
    func testCommandLineMemberSharesTheGroupWithTheMount() {
        ok("seq 1 6 > jobs")
        XCTAssertEqual(ok("timeout 10 head -n 2 .take/g/jobs"), "1\n2\n")
        XCTAssertEqual(ok("timeout 20 \"$DNPIPES\" pull $BACKEND --group g --limit 2 jobs"), "3\n4\n")
        XCTAssertEqual(ok("timeout 10 head -n 2 .take/g/jobs"), "5\n6\n")
        XCTAssertEqual(ok("\"$DNPIPES\" ls $BACKEND"), "jobs\n", "a group's journal is not listed as a pipe")
    }

    /// A host whose daemon is killed while its workers hold jobs: the other host does those jobs once the
    /// group timeout (3 s here) has passed.
    func testJobsHeldOnAKilledHostAreDoneOnTheOther() throws {
        ok("seq 1 4 > jobs")
        eventually("test -e \"$ROOT/mnt2/jobs\"")
        ok("""
        \(holdingOneJob("\(mnt2)/.group/g/jobs", wait: 150))
        """, timeout: 30)
        XCTAssertEqual(try String(contentsOfFile: root + "/held", encoding: .utf8), "1\n")
        let second = shell("pgrep -f -- 'mount \(mnt2) ' | head -n 1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertFalse(second.isEmpty, "no daemon for the second mount")
        shell("kill -KILL \(second)")
        let started = Date()
        XCTAssertEqual(ok("timeout 30 head -n 4 .take/g/jobs | sort -n"), "1\n2\n3\n4\n")
        XCTAssertGreaterThan(Date().timeIntervalSince(started), 2, "job 1 came back only after the group timeout")
        XCTAssertTrue(log.contains("wrote nothing for 3.0 s"), log)
        shell("pkill -KILL -f 'f = open(\"\(mnt2)'; umount -l \(quote(mnt2))")
    }
}
