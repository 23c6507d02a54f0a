import XCTest

/// A topic made by another Kafka client with several partitions: every partition is read, each in its own
/// order, by mounts and by the pull command; a reset clears them all; pushes from a mount go to partition 0.
final class KafkaPartitionsTests: TwoHostTestCase {
    override func setUpWithError() throws {
        try super.setUpWithError()
        guard shell("python3 -c 'import kafka'").status == 0 else {
            throw XCTSkip("kafka-python is not installed (scripts/setup --test installs it)")
        }
    }

    /// Runs Python with kafka-python against the test broker; `topic` is the topic of pipe `multi`.
    @discardableResult
    private func python(_ body: String, timeout: Int = 60) -> String {
        ok("""
        python3 - "\(KafkaBroker.shared.address)" "\(topicPrefix)multi" <<'PY'
        import sys
        from kafka import KafkaProducer, KafkaConsumer, TopicPartition
        from kafka.admin import KafkaAdminClient, NewTopic
        broker, topic = sys.argv[1], sys.argv[2]
        def produce(values_by_partition):
            producer = KafkaProducer(bootstrap_servers=broker, acks="all")
            for partition, values in values_by_partition.items():
                for v in values:
                    producer.send(topic, v.encode(), partition=partition)
            producer.flush()
        \(body)
        PY
        """, timeout: timeout)
    }

    /// Checks that `file` holds `count` lines of each partition n (`pN-1` ... `pN-count`), each in order.
    private func partitionsInOrder(_ file: String, partitions: Int = 3, count: Int) -> String {
        ok("""
        for n in $(seq 0 \(partitions - 1)); do
          grep "^p$n-" \(file) | cut -d- -f2 | cmp -s - <(seq 1 \(count)) && echo "p$n in order" || echo "p$n wrong"
        done
        wc -l < \(file)
        """)
    }

    func testEveryPartitionIsReadInItsOwnOrder() {
        python("""
        KafkaAdminClient(bootstrap_servers=broker).create_topics([NewTopic(topic, 3, 1)])
        # Interleaved on the producer's side, so each partition gets its messages in one order.
        produce({n: [f"p{n}-{i}" for i in range(1, 201)] for n in range(3)})
        """)
        eventually("test -e multi && test -e \"$ROOT/mnt2/multi\"")
        let expected = "p0 in order\np1 in order\np2 in order\n600\n"
        ok("cat .drain/multi > \"$ROOT/drained\"")
        XCTAssertEqual(partitionsInOrder("\"$ROOT/drained\"", count: 200), expected, "a .drain view reads every partition")
        ok("\"$DNPIPES\" pull $BACKEND --exit-at-end multi > \"$ROOT/pulled\"")
        XCTAssertEqual(partitionsInOrder("\"$ROOT/pulled\"", count: 200), expected, "so does the pull command")

        // A reader blocked at the end of every partition gets what arrives on any of them.
        ok("""
        head -n 603 "$ROOT/mnt2/multi" > "$ROOT/blocked" 2>/dev/null & reader=$!
        echo $reader > "$ROOT/reader.pid"
        sleep 1
        """)
        python("produce({n: [f\"p{n}-201\"] for n in range(3)})")
        ok("""
        for i in $(seq 100); do [ "$(wc -l < "$ROOT/blocked")" -ge 603 ] && break; sleep 0.1; done
        kill $(cat "$ROOT/reader.pid") 2>/dev/null || true
        """, timeout: 30)
        XCTAssertEqual(partitionsInOrder("\"$ROOT/blocked\"", count: 201), "p0 in order\np1 in order\np2 in order\n603\n")
    }

    func testResetClearsEveryPartitionOnEveryHost() {
        python("""
        KafkaAdminClient(bootstrap_servers=broker).create_topics([NewTopic(topic, 3, 1)])
        produce({n: [f"p{n}-{i}" for i in range(1, 11)] for n in range(3)})
        """)
        eventually("test -e multi && test -e \"$ROOT/mnt2/multi\"")
        XCTAssertEqual(ok("cat \"$ROOT/mnt2/.drain/multi\" | wc -l"), "30\n")
        ok("truncate -s 0 multi")
        XCTAssertEqual(ok("cat .drain/multi; cat \"$ROOT/mnt2/.drain/multi\""), "", "no partition keeps a message from before the reset")
        python("produce({n: [f\"after-{n}\"] for n in range(3)})")
        XCTAssertEqual(ok("cat \"$ROOT/mnt2/.drain/multi\" | sort"), "after-0\nafter-1\nafter-2\n")
        XCTAssertEqual(ok("\"$DNPIPES\" pull $BACKEND --exit-at-end multi | sort"), "after-0\nafter-1\nafter-2\n",
                       "a client that opens the pipe later starts past the reset in every partition")
    }

    func testPushesFromAMountGoToPartitionZeroInOrder() {
        python("KafkaAdminClient(bootstrap_servers=broker).create_topics([NewTopic(topic, 3, 1)])")
        eventually("test -e multi")
        ok("seq 1 50 > multi")
        let out = python("""
        consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, consumer_timeout_ms=3000)
        parts = [TopicPartition(topic, n) for n in range(3)]
        consumer.assign(parts); consumer.seek_to_beginning(*parts)
        got = {n: [] for n in range(3)}
        for m in consumer:
            got[m.partition].append(m.value.decode())
        print(got[0] == [str(i) for i in range(1, 51)], len(got[1]), len(got[2]))
        """)
        XCTAssertEqual(out, "True 0 0\n")
        XCTAssertEqual(ok("cat \"$ROOT/mnt2/.drain/multi\" | wc -l"), "50\n")
    }
}
