import DNPipesTestSupport
import XCTest

/// SASL set up through a private config file: the brokers (a relay that requires SASL/PLAIN in front of
/// tansu, which advertises the relay) let the daemon in only with the right password; pipes and the pipe
/// commands work with it, a wrong password fails the mount naming the brokers, and the password is never
/// logged.
final class KafkaSASLTests: MountTestCase {
    override class var backend: Backend { .kafka }
    override var mountsInSetUp: Bool { false }
    let saslPort = freeLoopbackPort()
    let brokerPort = freeLoopbackPort()
    var broker: Process?

    override func setUpWithError() throws {
        try super.setUpWithError()
        broker = try BrokerRig.startBroker(listen: brokerPort, advertise: saslPort)
        XCTAssertTrue(BrokerRig.startSASLRelay(listen: saslPort, target: brokerPort, user: "dnp", password: "s3cret-sasl", directory: root))
    }

    override func tearDownWithError() throws {
        unmountAll()
        BrokerRig.stopRelay(listen: saslPort)
        broker?.terminate()
        broker?.waitUntilExit()
        try super.tearDownWithError()
    }

    private func writeConfig(password: String) {
        ok("""
        printf 'security.protocol=SASL_PLAINTEXT\\nsasl.mechanisms=PLAIN\\nsasl.username=dnp\\nsasl.password=%s\\n' '\(password)' > "$ROOT/sasl.conf"
        chmod 600 "$ROOT/sasl.conf"
        """)
    }

    private var brokers: String { "--brokers 127.0.0.1:\(saslPort) --topic-prefix '\(topicPrefix)' --kafka-config \"$ROOT/sasl.conf\"" }

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
        XCTAssertTrue(r.stderr.contains("cannot reach the Kafka brokers 127.0.0.1:\(saslPort)"), r.stderr)
        XCTAssertTrue(ok("cat \"$ROOT/sasl-relay.log\"").contains("refused"), "the relay refused the credentials")
        XCTAssertFalse(r.stderr.contains("wrong-password") || log.contains("wrong-password"), "the password was printed")
    }
}
