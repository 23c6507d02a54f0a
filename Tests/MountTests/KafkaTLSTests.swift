import DNPipesTestSupport
import XCTest

/// TLS set up through a private config file: the daemon talks to the broker only over TLS (a relay that
/// terminates TLS with a certificate of the test's own CA sits in front of tansu, which advertises the relay),
/// pipes work through it, and a mount that does not trust that CA is refused, naming the brokers.
final class KafkaTLSTests: RelayedBrokerTestCase {
    override func setUpWithError() throws {
        try super.setUpWithError()
        // A CA and a server certificate for 127.0.0.1, signed by it.
        ok("""
        cd "$ROOT"
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=dnpipes-test-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out server.pem 2>/dev/null
        """)
        XCTAssertTrue(BrokerRig.startRelay(listen: relayPort, target: brokerPort, tls: (root + "/server.pem", root + "/server.key")))
    }

    func testPipesWorkOverTLSConfiguredInAPrivateFile() {
        ok("printf 'security.protocol=SSL\\nssl.ca.location=%s\\n' \"$ROOT/ca.pem\" > \"$ROOT/tls.conf\"; chmod 600 \"$ROOT/tls.conf\"")
        ok("\"$DNPIPES\" mount \"$MNT\" --data-dir \"$DATA\" --brokers 127.0.0.1:\(relayPort) --topic-prefix '\(topicPrefix)' --kafka-config \"$ROOT/tls.conf\"", timeout: 60)
        ok("seq 1 3 > p")
        XCTAssertEqual(ok("cat .drain/p"), "1\n2\n3\n")
        XCTAssertEqual(ok("\"$DNPIPES\" pull --brokers 127.0.0.1:\(relayPort) --topic-prefix '\(topicPrefix)' --kafka-config \"$ROOT/tls.conf\" --exit-at-end p"),
                       "1\n2\n3\n", "the pipe commands read the same file")
        XCTAssertTrue(log.contains("security.protocol=SSL"), log)
    }

    func testAMountThatDoesNotTrustTheBrokersCertificateIsRefused() {
        // Plain TCP to a TLS port, and TLS without the test's CA: both fail the mount in bounded time.
        for extra in ["", "-o kafka.security.protocol=SSL"] {
            let r = sh("\"$DNPIPES\" mount \"$MNT\" --data-dir \"$DATA\" --brokers 127.0.0.1:\(relayPort) \(extra)", timeout: 60)
            XCTAssertNotEqual(r.status, 0, extra)
            XCTAssertTrue(r.stderr.contains("cannot reach the Kafka brokers 127.0.0.1:\(relayPort)"), r.stderr)
        }
        XCTAssertTrue(log.contains("certificate verify failed") || log.contains("SSL handshake failed"), log)
    }
}
