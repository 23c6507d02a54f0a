import DNPipesTestSupport
import XCTest

/// Two hosts on one Kafka cluster (two daemons on one broker), the pipe commands for hosts without FUSE,
/// and an independent Kafka client reading and writing the same topics.
final class KafkaClusterTests: TwoHostTestCase {

    func testPipeMadeOnOneHostAppearsOnTheOther() {
        ok("mkfifo made-on-a")
        eventually("ls \"$ROOT/mnt2\" | grep -qx made-on-a")
        ok("rm made-on-a")
        eventually("! ls \"$ROOT/mnt2\" | grep -qx made-on-a")
    }

    /// Only Kafka's own topics (two underscores) are hidden, and the same rule refuses to make them: a name
    /// with one underscore is an ordinary pipe, listed on every host.
    func testOnlyDoubleUnderscoreNamesAreKafkasOwn() {
        ok("mkfifo _single; echo one > _single")
        eventually("ls \"$ROOT/mnt2\" | grep -qx _single")
        XCTAssertEqual(ok("cat \"$ROOT/mnt2/.drain/_single\""), "one\n")
        let r = sh("mkfifo __own 2>&1")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stdout.contains("Invalid argument"), r.stdout)
        XCTAssertTrue(log.contains("Kafka's internal topics"), log)
        XCTAssertEqual(ok("ls"), "_single\n")
    }

    /// A pipe deleted while readers on both hosts have it open: both readers reach end-of-file and both
    /// daemons serve on, again and again (the consumers of both were fetching the topic as it went away).
    func testPipeDeletedWhileBothHostsReadIt() {
        for round in 1...4 {
            let out = ok("""
            echo a > p\(round)
            for i in $(seq 100); do test -e "$ROOT/mnt2/p\(round)" && break; sleep 0.1; done
            cat p\(round) > "$ROOT/here" & here=$!
            cat "$ROOT/mnt2/p\(round)" > "$ROOT/there" & there=$!
            sleep 1
            rm p\(round)
            wait $here; wait $there
            sleep 1
            cat "$ROOT/here" "$ROOT/there"
            ls "$ROOT/mnt" "$ROOT/mnt2" > /dev/null && echo both-serve
            """, timeout: 40)
            XCTAssertEqual(out, "a\na\nboth-serve\n", "round \(round)")
        }
    }

    func testPushOnOneHostReachesABlockedReaderOnTheOther() {
        ok("mkfifo p")
        eventually("test -e \"$ROOT/mnt2/p\"")
        let out = ok("""
        head -n 2 "$ROOT/mnt2/p" > "$ROOT/out" & reader=$!
        sleep 1
        echo one > p; echo two > p
        wait $reader
        cat "$ROOT/out"
        """, timeout: 30)
        XCTAssertEqual(out, "one\ntwo\n")
    }

    func testResetOnOneHostIsSeenOnTheOther() {
        ok("seq 1 3 > p")
        eventually("test -e \"$ROOT/mnt2/p\"")
        XCTAssertEqual(ok("cat \"$ROOT/mnt2/.drain/p\""), "1\n2\n3\n")
        ok("truncate -s 0 p")
        XCTAssertEqual(ok("cat \"$ROOT/mnt2/.drain/p\""), "", "no reader on the other host gets a message pushed before the reset")
        ok("echo only > \"$ROOT/mnt2/p\"")
        XCTAssertEqual(ok("cat .drain/p"), "only\n", "the next push is the only message")
    }

    /// A host that opens a pipe after a reset elsewhere starts past it (the reset is recorded with the cluster),
    /// and so does the command-line client.
    func testResetBeforeTheOtherHostFirstOpensThePipe() {
        ok("seq 1 3 > p; truncate -s 0 p; echo after > p")
        eventually("test -e \"$ROOT/mnt2/p\"")
        XCTAssertEqual(ok("cat \"$ROOT/mnt2/.drain/p\""), "after\n")
        XCTAssertEqual(ok("\"$DNPIPES\" pull $BACKEND --exit-at-end p"), "after\n")
    }

    /// A pipe much larger than a mount's read window (8 MiB), read whole on a mount that never opened it:
    /// the stream starts at the last reset and serves readers while it fetches the rest.
    func testPipeLargerThanTheWindowIsReadWholeElsewhere() {
        ok("seq 1 10 > p; truncate -s 0 p")
        ok("seq -f '%0100g' 1 150000 > p", timeout: 120)
        eventually("test -e \"$ROOT/mnt2/p\"")
        let out = ok("""
        cat "$ROOT/mnt2/.drain/p" > "$ROOT/out"
        cmp "$ROOT/out" <(seq -f '%0100g' 1 150000) && echo whole-and-in-order
        """, timeout: 120)
        XCTAssertEqual(out, "whole-and-in-order\n")
    }

    func testTwentyThousandLinesCrossInOrderNoneLostOrDoubled() {
        ok("mkfifo p")
        eventually("test -e \"$ROOT/mnt2/p\"")
        let out = ok("""
        head -n 20000 "$ROOT/mnt2/p" > "$ROOT/out" & reader=$!
        seq 1 20000 > p
        wait $reader
        cmp "$ROOT/out" <(seq 1 20000) && echo in-order
        timeout 2 cat "$ROOT/mnt2/.drain/p" | wc -l
        """, timeout: 120)
        XCTAssertEqual(out, "in-order\n20000\n")
    }

    func testPipeCommandsMixWithMounts() {
        let out = ok("""
        seq 1 3 | "$DNPIPES" push $BACKEND from-cmd
        cat .drain/from-cmd; echo ---
        echo from-mount > p
        "$DNPIPES" pull $BACKEND p --exit-at-end; echo ---
        "$DNPIPES" ls $BACKEND; echo ---
        "$DNPIPES" pull $BACKEND p --from-end > "$ROOT/tail" & tail=$!
        sleep 1.5
        echo later > p
        for i in $(seq 50); do grep -q later "$ROOT/tail" && break; sleep 0.1; done
        kill $tail; cat "$ROOT/tail"; echo ---
        "$DNPIPES" reset $BACKEND p
        cat .drain/p; echo ---
        """, timeout: 60)
        XCTAssertEqual(out, "1\n2\n3\n---\nfrom-mount\n---\nfrom-cmd\np\n---\nlater\n---\n---\n")
    }

    func testIndependentKafkaClientInterop() throws {
        guard shell("python3 -c 'import kafka'").status == 0 else {
            XCTFail("kafka-python is not installed (scripts/setup --test installs it)")
            return
        }
        ok("printf 'alpha\\nbeta\\n' > p")
        let out = ok("""
        python3 - "\(KafkaBroker.shared.address)" "\(topicPrefix)" <<'PY'
        import sys
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition
        broker, prefix = sys.argv[1], sys.argv[2]
        consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, consumer_timeout_ms=5000)
        tp = TopicPartition(prefix + "p", 0)
        consumer.assign([tp]); consumer.seek_to_beginning(tp)
        values = []
        for m in consumer:
            values.append(m.value.decode())
            if len(values) == 2: break
        print(",".join(values))
        producer = KafkaProducer(bootstrap_servers=broker, acks="all")
        for v in (b"gamma", b"delta"):
            producer.send(prefix + "p", v, partition=0)
        producer.flush()
        PY
        """, timeout: 60)
        XCTAssertEqual(out, "alpha,beta\n", "what the filesystem pushes is read as plain values")
        XCTAssertEqual(ok("cat .drain/p"), "alpha\nbeta\ngamma\ndelta\n", "what another client produces comes out of cat")
    }

    func testRemountKeepsMessages() throws {
        ok("seq 1 100 > p")
        XCTAssertEqual(shell("\(quote(dnpipesBinary)) unmount \(quote(mnt))").status, 0)
        try mount()
        XCTAssertEqual(ok("cmp <(cat .drain/p) <(seq 1 100) && echo same"), "same\n")
    }

    func testUnreachableBrokersFailTheMountClearlyAndInBoundedTime() {
        let dead = freeLoopbackPort()
        let r = sh("""
        start=$(date +%s)
        mkdir -p "$ROOT/mnt3"
        "$DNPIPES" mount "$ROOT/mnt3" --data-dir "$ROOT/d3" --brokers 127.0.0.1:\(dead) -o kafka.socket.connection.setup.timeout.ms=1000 2>&1; status=$?
        echo "status $status after $(( $(date +%s) - start ))s"
        """, timeout: 90)
        XCTAssertTrue(r.stdout.contains("cannot reach the Kafka brokers 127.0.0.1:\(dead)"), r.stdout)
        let seconds = Int(r.stdout.components(separatedBy: "after ").last?.dropLast(2) ?? "99") ?? 99
        XCTAssertTrue(r.stdout.contains("status 1"), r.stdout)
        XCTAssertLessThanOrEqual(seconds, 30)
    }

    func testConfigFileWithASecretMustBePrivate() {
        let r = sh("""
        printf 'sasl.password=hunter2\\n' > "$ROOT/kafka.conf"; chmod 644 "$ROOT/kafka.conf"
        mkdir -p "$ROOT/mnt3"
        "$DNPIPES" mount "$ROOT/mnt3" --data-dir "$ROOT/d3" $BACKEND --kafka-config "$ROOT/kafka.conf"
        """)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("holds a secret (sasl.password) but other users can read it"), r.stderr)
        XCTAssertFalse(r.stderr.contains("hunter2") || log.contains("hunter2"), "a secret was printed")
    }

    func testSecretOptionsStayOffTheDaemonCommandLine() {
        let out = ok("""
        mkdir -p "$ROOT/mnt3"
        "$DNPIPES" mount "$ROOT/mnt3" --data-dir "$DATA" $BACKEND -o kafka.sasl.password=s3cret-argv,max_message=50 > /dev/null
        pid=$(cat "/run/dnpipes/$(printf %s "$ROOT/mnt3" | sed 's|%|%25|g; s|/|%2F|g').pid")
        tr '\\0' ' ' < /proc/$pid/cmdline | grep -c s3cret-argv || true
        tr '\\0' ' ' < /proc/$pid/cmdline | grep -c max_message=50 || true
        echo pushed > "$ROOT/mnt3/q" && cat "$ROOT/mnt3/.drain/q"
        """, timeout: 60)
        XCTAssertEqual(out, "0\n1\npushed\n", "the secret must not be on the command line; other options stay")
        XCTAssertFalse(log.contains("s3cret-argv"), "a secret was logged")
    }
}
