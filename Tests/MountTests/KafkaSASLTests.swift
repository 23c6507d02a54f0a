import DNPipesTestSupport
import XCTest

/// SASL set up through a private config file: the brokers (a relay that requires SASL/PLAIN in front of
/// tansu, which advertises the relay) let the daemon in only with the right password; pipes and the pipe
/// commands work with it, a wrong password fails the mount naming the brokers, and the password is never
/// logged.
final class KafkaSASLTests: RelayedBrokerTestCase {
    override func setUpWithError() throws {
        try super.setUpWithError()
        XCTAssertTrue(BrokerRig.startSASLRelay(listen: relayPort, target: brokerPort, user: "dnp", password: "s3cret-sasl", directory: root))
    }

    private func writeConfig(password: String) {
        ok("""
        printf 'security.protocol=SASL_PLAINTEXT\\nsasl.mechanisms=PLAIN\\nsasl.username=dnp\\nsasl.password=%s\\n' '\(password)' > "$ROOT/sasl.conf"
        chmod 600 "$ROOT/sasl.conf"
        """)
    }

    private var brokers: String { "--brokers 127.0.0.1:\(relayPort) --topic-prefix '\(topicPrefix)' --kafka-config \"$ROOT/sasl.conf\"" }

    func testPipesWorkWithSASLConfiguredInAPrivateFile() {
        writeConfig(password: "s3cret-sasl")
        ok("\"$DNPIPES\" mount \"$MNT\" --data-dir \"$DATA\" \(brokers)", timeout: 60)
        ok("seq 1 3 > p")
        XCTAssertEqual(ok("cat .drain/p"), "1\n2\n3\n")
        XCTAssertEqual(ok("\"$DNPIPES\" pull \(brokers) --exit-at-end p"), "1\n2\n3\n", "the pipe commands read the same file")
        XCTAssertTrue(ok("cat \"$ROOT/sasl-relay.log\"").contains("authenticated"), "the clients authenticated at the relay")
        XCTAssertFalse(ok("cat \"$ROOT/sasl-relay.log\"").contains("refused"))
        XCTAssertTrue(log.contains("sasl.username=dnp"), log)
        XCTAssertFalse(log.contains("s3cret-sasl"), "the password was logged")
    }

    func testAWrongPasswordFailsTheMountClearly() {
        writeConfig(password: "wrong-password")
        let r = sh("\"$DNPIPES\" mount \"$MNT\" --data-dir \"$DATA\" \(brokers)", timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("cannot reach the Kafka brokers 127.0.0.1:\(relayPort)"), r.stderr)
        XCTAssertTrue(ok("cat \"$ROOT/sasl-relay.log\"").contains("refused"), "the relay refused the credentials")
        XCTAssertFalse(r.stderr.contains("wrong-password") || log.contains("wrong-password"), "the password was printed")
    }
}
