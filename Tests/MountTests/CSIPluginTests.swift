import Foundation
import XCTest

/// dnpipes-csi as kubelet uses it: identity, publish into a pod's volume path against the test broker, use
/// by non-root processes, read-only volumes, a plugin killed and started again, and refused requests.
final class CSIPluginTests: CSIPluginTestCase {
    func testIdentityAndNodeInformation() throws {
        let info = try ok("Identity.GetPluginInfo")
        XCTAssertEqual(info["name"] as? String, "dnpipes.csi.io")
        XCTAssertFalse((info["vendor_version"] as? String ?? "").isEmpty, "no version: \(info)")
        // No Controller service: static volumes only.
        let capabilities = try ok("Identity.GetPluginCapabilities")
        XCTAssertNil(capabilities["capabilities"], "unexpected plugin capabilities: \(capabilities)")
        XCTAssertEqual((try ok("Identity.Probe"))["ready"] as? Bool, true)
        XCTAssertEqual((try ok("Node.NodeGetInfo"))["node_id"] as? String, Self.nodeID)
        let node = try ok("Node.NodeGetCapabilities")
        let types = (node["capabilities"] as? [[String: Any]] ?? []).compactMap { ($0["rpc"] as? [String: Any])?["type"] as? String }
        XCTAssertEqual(types, ["VOLUME_MOUNT_GROUP"])
        for method in ["/csi.v1.Node/NodeStageVolume", "/csi.v1.Node/NodeUnstageVolume", "/csi.v1.Node/NodeGetVolumeStats",
                       "/csi.v1.Node/NodeExpandVolume", "/csi.v1.Controller/CreateVolume", "/csi.v1.Controller/ControllerPublishVolume"] {
            try fails(method, [:], with: "UNIMPLEMENTED")
        }
    }

    /// The whole life of a volume, as a pod without fsGroup running as uid 1000 sees it.
    func testPublishServesAPodsNonRootUserAndUnpublishRemovesIt() throws {
        let mnt = target()
        let request = publishRequest(target: mnt)
        try ok("Node.NodePublishVolume", request)
        XCTAssertEqual(mountType(mnt), "fuse.dnpipes")
        let r = asUser("""
        mkfifo jobs && printf 'resize a.png\\nresize b.png\\n' > jobs && cat .drain/jobs && ls -ln jobs | cut -d' ' -f1,3,4
        """, in: mnt)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "resize a.png\nresize b.png\n-rw-rw-rw- 0 0\n")
        // The pipe is the cluster's topic: another client of the cluster reads it.
        XCTAssertEqual(pull("jobs"), "resize a.png\nresize b.png\n")

        // Publishing again is success; the same path with other settings is not.
        try ok("Node.NodePublishVolume", request)
        try fails("Node.NodePublishVolume", publishRequest(target: mnt, context: ["topicPrefix": topicPrefix + "other-"]),
                  with: "ALREADY_EXISTS")
        XCTAssertEqual(asUser("cat .drain/jobs | wc -l", in: mnt).stdout.trimmingCharacters(in: .whitespaces), "2\n")

        try ok("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume", "target_path": mnt])
        XCTAssertEqual(mountType(mnt), "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: mnt), "target path left behind")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: state + "/volumes"), [], "volume state left behind")
        try ok("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume", "target_path": mnt])
        // No daemon is left serving it.
        XCTAssertNotEqual(shell("pgrep -f -- '--[d]ata-dir \(state)/'", timeout: 10).status, 0, "a daemon outlived its volume")
    }

    /// With an fsGroup, kubelet passes the group (VOLUME_MOUNT_GROUP) and only its members get in.
    func testFSGroupOwnsTheVolume() throws {
        let mnt = target()
        // The volume's mountOptions reach the mount: here a small message limit.
        try ok("Node.NodePublishVolume", publishRequest(target: mnt, fsGroup: "2345", mountFlags: ["max_message=16"]))
        let member = asUser("""
        mkfifo events && echo started > events && cat .drain/events && stat -c '%a %g' events .
        echo 'a line longer than sixteen bytes' 2>&1 > events | grep -o 'Message too long'
        """, uid: 1000, gid: 1000, groups: [2345], in: mnt)
        XCTAssertEqual(member.stdout, "started\n660 2345\n770 2345\nMessage too long\n", member.stderr)
        let stranger = asUser("cat \(quote(mnt))/.drain/events", uid: 1001, gid: 1001, in: root)
        XCTAssertNotEqual(stranger.status, 0)
        XCTAssertTrue(stranger.stderr.contains("Permission denied"), stranger.stderr)
    }

    func testReadOnlyVolumeRefusesWrites() throws {
        let writer = target(pod: "writer-pod")
        try ok("Node.NodePublishVolume", publishRequest(volume: "writer", target: writer))
        XCTAssertEqual(asUser("mkfifo log && echo one > log", in: writer).status, 0)
        let reader = target(pod: "reader-pod")
        try ok("Node.NodePublishVolume", publishRequest(volume: "reader", target: reader, readonly: true))
        let r = asUser("""
        cat .drain/log
        echo two > log 2>/dev/null || echo "write: $?"
        mkfifo other 2>&1 | grep -o 'Read-only file system'
        echo three 2>&1 > log | grep -o 'Read-only file system'
        rm log 2>&1 | grep -o 'Read-only file system'
        truncate -s 0 log 2>&1 | grep -o 'Read-only file system'
        """, in: reader)
        XCTAssertEqual(r.stdout, "one\nwrite: 1\n" + String(repeating: "Read-only file system\n", count: 4), r.stderr)
        XCTAssertEqual(pull("log"), "one\n")
        // A read-only publish of a path published writable is another volume.
        try fails("Node.NodePublishVolume", publishRequest(volume: "writer", target: writer, readonly: true), with: "ALREADY_EXISTS")
    }

    /// The daemons are not the plugin's children: SIGKILL of the plugin leaves the volume serving, and a
    /// plugin started again adopts it and can unpublish it.
    func testVolumeSurvivesSIGKILLOfThePlugin() throws {
        let mnt = target()
        try ok("Node.NodePublishVolume", publishRequest(target: mnt))
        XCTAssertEqual(asUser("mkfifo p && echo before > p", in: mnt).status, 0)
        killPlugin()
        let r = asUser("echo after > p && cat .drain/p", in: mnt)
        XCTAssertEqual(r.stdout, "before\nafter\n", r.stderr)
        try startPlugin()
        XCTAssertTrue(pluginOutput.contains("adopted live volume"), pluginOutput)
        try ok("Node.NodePublishVolume", publishRequest(target: mnt))
        try ok("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume", "target_path": mnt])
        XCTAssertEqual(mountType(mnt), "")
        XCTAssertEqual(pull("p"), "before\nafter\n")
        try ok("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume", "target_path": mnt])
    }

    /// SIGTERM (a pod's deletion) stops the plugin; its volumes stay mounted for their pods.
    func testStopSignalStopsThePluginButNotItsVolumes() throws {
        let mnt = target()
        try ok("Node.NodePublishVolume", publishRequest(target: mnt))
        guard let supervisor = pluginPID, let p = plugin else { return XCTFail("no plugin") }
        kill(supervisor, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        XCTAssertFalse(p.isRunning, "the plugin did not stop on SIGTERM")
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertTrue(pluginOutput.contains("published volumes stay mounted"), pluginOutput)
        XCTAssertEqual(asUser("mkfifo p && echo still > p && cat .drain/p", in: mnt).stdout, "still\n")
        try startPlugin()
        try ok("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume", "target_path": mnt])
        XCTAssertEqual(mountType(mnt), "")
    }

    /// A crash of the server (here SIGKILL) is not a restart of the plugin: its first process starts the
    /// server again, which adopts the volume, still serving.
    func testKilledServerIsStartedAgainAndTheVolumeKeepsServing() throws {
        let mnt = target()
        try ok("Node.NodePublishVolume", publishRequest(target: mnt))
        guard let first = serverPID else { return XCTFail("no server process") }
        kill(first, SIGKILL)
        XCTAssertEqual(asUser("mkfifo p && echo meanwhile > p && cat .drain/p", in: mnt).stdout, "meanwhile\n")
        var restarted: Int32?
        for _ in 0..<100 where restarted == nil {
            usleep(100_000)
            if let pid = serverPID, pid != first, (try? call("Identity.Probe", timeout: 10))?.output.contains("\"ready\": true") == true {
                restarted = pid
            }
        }
        XCTAssertNotNil(restarted, "no new server answered Probe: \(pluginOutput)")
        XCTAssertTrue(pluginOutput.contains("the server ended (signal 9"), pluginOutput)
        XCTAssertTrue(pluginOutput.contains("adopted live volume"), pluginOutput)
        try ok("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume", "target_path": mnt])
        XCTAssertEqual(mountType(mnt), "")
        // The daemon exited and was reaped: no zombie is left under the plugin.
        XCTAssertEqual(shell("ps -o stat= --ppid \(pluginPID ?? 0) | grep -c Z", timeout: 10).stdout, "0\n")
    }

    /// A daemon that died while the plugin was down leaves a mount that answers ENOTCONN: the plugin
    /// cleans it up when it starts, and the volume can be unpublished (or published again).
    func testDeadMountIsCleanedUpAtStart() throws {
        let mnt = target()
        try ok("Node.NodePublishVolume", publishRequest(target: mnt))
        killPlugin()
        shell("pkill -KILL -f -- '--[d]ata-dir \(state)/'; sleep 0.5", timeout: 10)
        XCTAssertTrue(shell("stat \(quote(mnt))", timeout: 10).stderr.contains("Transport endpoint is not connected"))
        try startPlugin()
        XCTAssertEqual(mountType(mnt), "", "dead mount left: \(pluginOutput)")
        XCTAssertTrue(pluginOutput.contains("cleaned up a dead mount"), pluginOutput)
        try ok("Node.NodePublishVolume", publishRequest(target: mnt))
        XCTAssertEqual(asUser("mkfifo p && echo again > p && cat .drain/p", in: mnt).stdout, "again\n")
        try ok("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume", "target_path": mnt])
    }

    /// Without brokers, a volume is an embedded store of its own on the node, gone when it is unpublished.
    func testVolumeWithoutBrokersIsAnEmbeddedStoreOfItsOwn() throws {
        let mnt = target()
        try ok("Node.NodePublishVolume", publishRequest(target: mnt).removingBrokers())
        let r = asUser("mkfifo local && echo here > local && cat .drain/local", in: mnt)
        XCTAssertEqual(r.stdout, "here\n", r.stderr)
        XCTAssertEqual(pull("local"), "", "an embedded volume's pipe reached the broker")
        try ok("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume", "target_path": mnt])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: state + "/volumes"), [])
    }

    func testMissingOrBadFieldsAreInvalidArgument() throws {
        let mnt = target()
        let good = publishRequest(target: mnt)
        var cases: [(String, [String: Any])] = []
        for field in ["volume_id", "target_path", "volume_capability"] {
            var r = good
            r.removeValue(forKey: field)
            cases.append((field, r))
        }
        var noAccessMode = good
        noAccessMode["volume_capability"] = ["mount": [String: Any]()]
        cases.append(("access_mode", noAccessMode))
        var block = good
        block["volume_capability"] = ["block": [String: Any](), "access_mode": ["mode": "SINGLE_NODE_WRITER"]]
        cases.append(("block", block))
        cases.append(("unknown attribute", publishRequest(target: mnt, context: ["colour": "blue"])))
        cases.append(("secret attribute", publishRequest(target: mnt, context: ["kafka.sasl.password": "hunter2"])))
        cases.append(("bad mode", publishRequest(target: mnt, context: ["mode": "999"])))
        cases.append(("bad fsGroup", publishRequest(target: mnt, fsGroup: "staff")))
        for (what, request) in cases {
            let message = try fails("Node.NodePublishVolume", request, with: "INVALID_ARGUMENT")
            XCTAssertFalse(message.contains("hunter2"), "\(what): a secret in the answer: \(message)")
        }
        try fails("Node.NodeUnpublishVolume", ["target_path": mnt], with: "INVALID_ARGUMENT")
        try fails("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume"], with: "INVALID_ARGUMENT")
        XCTAssertFalse(FileManager.default.fileExists(atPath: mnt), "a refused publish made the target")
        XCTAssertFalse(pluginOutput.contains("hunter2"), "a secret in the plugin's log")
    }

    /// Brokers that cannot be reached: UNAVAILABLE after the connect timeout, and nothing left behind; a
    /// second request for the path meanwhile gets ABORTED (kubelet retries it).
    func testUnreachableBrokersLeaveNothingMounted() throws {
        let mnt = target()
        let port = shell("python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'",
                         timeout: 10).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let request = publishRequest(target: mnt, context: ["brokers": "127.0.0.1:\(port)"])
        // While that publish waits for the brokers, a second one for the same path is told to come back.
        let json = String(decoding: try JSONSerialization.data(withJSONObject: request), as: UTF8.self)
        let first = shell("""
        python3 \(quote(Self.clientScript)) --socket \(quote(socket)) --cache \(quote(root + "/stubs")) Node.NodePublishVolume \(quote(json)) \
          > \(quote(root + "/first.out")) 2>&1 &
        echo $!
        """, timeout: 10).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        eventuallyLogged("mounting")
        try fails("Node.NodePublishVolume", request, with: "ABORTED")
        shell("while kill -0 \(first) 2>/dev/null; do sleep 0.2; done", timeout: 60)
        let message = (try? String(contentsOfFile: root + "/first.out", encoding: .utf8)) ?? ""
        XCTAssertTrue(message.hasPrefix("UNAVAILABLE "), message)
        XCTAssertTrue(message.contains("cannot reach the Kafka brokers"), message)
        XCTAssertEqual(mountType(mnt), "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: mnt), "target left behind")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: state + "/volumes"), [])
        XCTAssertNotEqual(shell("pgrep -f -- '--[d]ata-dir \(state)/'", timeout: 10).status, 0, "a daemon is left")
    }
}

private extension Dictionary where Key == String, Value == Any {
    /// The request with neither brokers nor a topic prefix in its volume context.
    func removingBrokers() -> [String: Any] {
        var request = self
        var context = request["volume_context"] as? [String: String] ?? [:]
        context["brokers"] = nil
        context["topicPrefix"] = nil
        request["volume_context"] = context
        return request
    }
}

extension CSIPluginTestCase {
    /// Waits (up to 10 s) until the plugin's log has a line containing `text`.
    func eventuallyLogged(_ text: String, file: StaticString = #filePath, line: UInt = #line) {
        for _ in 0..<100 {
            if pluginOutput.contains(text) { return }
            usleep(100_000)
        }
        XCTFail("the plugin never logged '\(text)': \(pluginOutput)", file: file, line: line)
    }
}
