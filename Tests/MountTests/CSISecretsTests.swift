import DNPipesTestSupport
import Foundation
import XCTest

/// A volume whose brokers need SASL: the credentials come in the publish request's secrets (a Secret named
/// by nodePublishSecretRef), reach librdkafka, and appear on no command line, in no environment and in no
/// log; unpublish removes them from the node.
final class CSISecretsTests: CSIPluginTestCase {
    let relayPort = freeLoopbackPort()
    let brokerPort = freeLoopbackPort()
    var saslBroker: Process?
    let password = "pw-\(UInt64.random(in: 0...UInt64.max))"

    override func setUpWithError() throws {
        try super.setUpWithError()
        saslBroker = try BrokerRig.startBroker(listen: brokerPort, advertise: relayPort)
        guard BrokerRig.startSASLRelay(listen: relayPort, target: brokerPort, user: "pipes-app", password: password, directory: root) else {
            XCTFail("the SASL relay did not start")
            throw XCTSkip("no relay")
        }
    }

    override func tearDownWithError() throws {
        try super.tearDownWithError()
        BrokerRig.stopRelay(listen: relayPort)
        saslBroker?.terminate()
        saslBroker?.waitUntilExit()
    }

    func testSecretsReachTheBrokerAndNothingElse() throws {
        let mnt = target()
        let request = publishRequest(target: mnt, fsGroup: "2000",
                                     context: ["brokers": "127.0.0.1:\(relayPort)", "kafka.security.protocol": "SASL_PLAINTEXT",
                                               "kafka.sasl.mechanism": "PLAIN"],
                                     secrets: ["sasl.username": "pipes-app", "sasl.password": password])
        try ok("Node.NodePublishVolume", request)
        let r = asUser("mkfifo jobs && echo job-1 > jobs && cat .drain/jobs", uid: 1000, gid: 1000, groups: [2000], in: mnt)
        XCTAssertEqual(r.stdout, "job-1\n", r.stderr)
        let relayLog = (try? String(contentsOfFile: root + "/sasl-relay.log", encoding: .utf8)) ?? ""
        XCTAssertTrue(relayLog.contains("authenticated"), "the daemon never authenticated: \(relayLog)")
        XCTAssertFalse(relayLog.contains("refused"), relayLog)

        // Only in the volume's own settings file, which only root reads.
        let properties = shell("find \(quote(state)) -name kafka.properties -exec stat -c '%a %U' {} \\; -exec grep -c -F \"$PW\" {} \\;",
                               env: ["PW": password], timeout: 10).stdout
        XCTAssertEqual(properties, "600 root\n1\n")
        // Every process but the relay's (which plays the broker and holds the password by design).
        let passwordFile = root + "/password"
        try password.write(toFile: passwordFile, atomically: true, encoding: .utf8)
        let leaks = shell("""
        for d in /proc/[0-9]*; do
          grep -qa sasl-relay "$d/cmdline" 2>/dev/null && continue
          for f in "$d/cmdline" "$d/environ"; do
            grep -qaF -f "$PWFILE" "$f" 2>/dev/null && echo "$f: $(tr '\\0' ' ' < "$d/cmdline" | cut -c1-120)"
          done
        done
        grep -rlaF -f "$PWFILE" \(quote(pluginLog)) \(quote(state)) /proc/self/mountinfo | grep -v '/kafka.properties$'
        true
        """, env: ["PWFILE": passwordFile], timeout: 60).stdout
        XCTAssertEqual(leaks, "", "the password is visible elsewhere")

        // A repeated publish with the same secrets is the same volume.
        try ok("Node.NodePublishVolume", request)
        try ok("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume", "target_path": mnt])
        XCTAssertEqual(shell("grep -rlaF -- \"$PW\" \(quote(state)) | wc -l", env: ["PW": password], timeout: 10).stdout, "0\n",
                       "the secret stayed on the node")
    }
}
