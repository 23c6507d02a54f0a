import Foundation
import XCTest

/// examples/kubernetes/csi: the manifests parse, and the fields that make them work agree with each other
/// and with what the running plugin answers (its name, its fsGroup capability).
final class CSIManifestTests: CSIPluginTestCase {
    var manifests: String { repositoryRoot + "/examples/kubernetes/csi" }

    func testManifestsFitThePluginAndEachOther() throws {
        guard shell("python3 -c 'import yaml'", timeout: 30).status == 0 else {
            XCTFail("PyYAML is not installed (scripts/setup --test installs it)")
            return
        }
        let name = try ok("Identity.GetPluginInfo")["name"] as? String ?? ""
        let capabilities = try ok("Node.NodeGetCapabilities")
        let mountGroup = "\(capabilities)".contains("VOLUME_MOUNT_GROUP")
        let r = shell(#"""
        python3 - "$DIR" "$DRIVER" "$MOUNT_GROUP" <<'PY'
        import os, sys, yaml
        d, driver, mount_group = sys.argv[1], sys.argv[2], sys.argv[3] == "true"
        docs = [x for f in sorted(os.listdir(d)) if f.endswith(".yaml") for x in yaml.safe_load_all(open(os.path.join(d, f))) if x]
        def kind(k): return [x for x in docs if x["kind"] == k]
        def one(k, name):
            (x,) = [x for x in kind(k) if x["metadata"]["name"] == name]
            return x
        def check(what, ok): print(("ok " if ok else "FAIL ") + what)

        (drv,) = kind("CSIDriver")
        s = drv["spec"]
        check("CSIDriver is named as GetPluginInfo answers", drv["metadata"]["name"] == driver)
        check("CSIDriver: nothing to attach", s["attachRequired"] is False)
        check("CSIDriver: pod info on mount", s["podInfoOnMount"] is True)
        check("CSIDriver: Persistent and Ephemeral", sorted(s["volumeLifecycleModes"]) == ["Ephemeral", "Persistent"])
        check("CSIDriver: fsGroupPolicy File, with the plugin's VOLUME_MOUNT_GROUP", s["fsGroupPolicy"] == "File" and mount_group)

        (ds,) = kind("DaemonSet")
        ns = ds["metadata"]["namespace"]
        spec = ds["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in spec["volumes"]}
        cs = {c["name"]: c for c in spec["containers"]}
        plugin = [c for c in cs.values() if "dnpipes-csi" in c["image"]]
        check("DaemonSet: one plugin container", len(plugin) == 1)
        plugin = plugin[0]
        args = dict(a[2:].split("=", 1) for a in plugin["args"])
        sock = args["endpoint"].removeprefix("unix://")
        mounts = {m["mountPath"]: m for m in plugin["volumeMounts"]}
        def host_of(container, path):
            # The node path behind a path in a container, through its hostPath mounts.
            for m in container["volumeMounts"]:
                if (path + "/").startswith(m["mountPath"].rstrip("/") + "/") and "hostPath" in vols[m["name"]]:
                    return vols[m["name"]]["hostPath"]["path"] + path[len(m["mountPath"].rstrip("/")):]
            return None
        check("plugin: socket on the node at kubelet's plugins/DRIVER/", host_of(plugin, sock) == f"/var/lib/kubelet/plugins/{driver}/csi.sock")
        check("plugin: --node-id from the node's name",
              args["node-id"] == "$(NODE_NAME)" and any(e["name"] == "NODE_NAME" and e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" for e in plugin["env"]))
        check("plugin: state directory on the node (it outlives the container)", (host_of(plugin, args["state-dir"]) or "").startswith("/var/lib/kubelet/plugins/"))
        pods = mounts.get("/var/lib/kubelet/pods")
        check("plugin: kubelet's pods directory at the same path, Bidirectional",
              pods is not None and vols[pods["name"]]["hostPath"]["path"] == "/var/lib/kubelet/pods" and pods.get("mountPropagation") == "Bidirectional")
        check("plugin: privileged (Bidirectional propagation, mounting)", plugin["securityContext"].get("privileged") is True)
        fuse = mounts.get("/dev/fuse")
        check("plugin: /dev/fuse as a character device", fuse is not None and vols[fuse["name"]]["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"})
        check("DaemonSet: upgrades wait for the operator (OnDelete)", ds["spec"]["updateStrategy"]["type"] == "OnDelete")

        reg = [c for c in cs.values() if "csi-node-driver-registrar" in c["image"]]
        check("sidecar: node-driver-registrar", len(reg) == 1)
        rargs = dict(a[2:].split("=", 1) for a in reg[0]["args"])
        check("registrar: dials the plugin's socket", host_of(reg[0], rargs["csi-address"]) == host_of(plugin, sock))
        check("registrar: registers the socket's node path", rargs["kubelet-registration-path"] == host_of(plugin, sock))
        check("registrar: kubelet's registration directory", host_of(reg[0], "/registration") == "/var/lib/kubelet/plugins_registry")
        live = [c for c in cs.values() if "sig-storage/livenessprobe" in c["image"]]
        check("sidecar: livenessprobe", len(live) == 1)
        largs = dict(a[2:].split("=", 1) for a in live[0]["args"])
        check("livenessprobe: dials the plugin's socket", host_of(live[0], largs["csi-address"]) == host_of(plugin, sock))
        port = {p["name"]: p["containerPort"] for p in plugin.get("ports", [])}
        probe = plugin["livenessProbe"]["httpGet"]
        check("plugin: liveness probe on the sidecar's port", probe["path"] == "/healthz" and port.get(probe["port"]) == int(largs["health-port"]))
        for c in list(cs.values()):
            if c is not plugin:
                sc = c.get("securityContext", {})
                check(f"sidecar {c['name']}: unprivileged", not sc.get("privileged") and sc.get("allowPrivilegeEscalation") is False
                      and sc["capabilities"]["drop"] == ["ALL"])
        sa = spec["serviceAccountName"]
        check("DaemonSet: its ServiceAccount exists in its namespace", any(x["metadata"]["name"] == sa and x["metadata"]["namespace"] == ns for x in kind("ServiceAccount")))
        check("DaemonSet: its namespace allows privileged pods", one("Namespace", ns)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged")

        pvs = {x["metadata"]["name"]: x for x in kind("PersistentVolume")}
        for pv in pvs.values():
            c = pv["spec"]["csi"]
            check(f"PV {pv['metadata']['name']}: this driver", c["driver"] == driver)
            attrs = c["volumeAttributes"]
            check(f"PV {pv['metadata']['name']}: attributes the plugin takes, no secret among them",
                  "brokers" in attrs and all(k in ("brokers", "topicPrefix", "maxMessageBytes", "uid", "gid", "mode") or k.startswith("kafka.") for k in attrs)
                  and not any("password" in k or "secret" in k for k in attrs))
            ref = c.get("nodePublishSecretRef")
            check(f"PV {pv['metadata']['name']}: its secret exists", ref is None or any(
                x["metadata"]["name"] == ref["name"] and x["metadata"]["namespace"] == ref["namespace"] for x in kind("Secret")))
        pvcs = {(x["metadata"]["namespace"], x["metadata"]["name"]): x for x in kind("PersistentVolumeClaim")}
        for pvc in pvcs.values():
            pv = pvs[pvc["spec"]["volumeName"]]
            check(f"PVC {pvc['metadata']['name']}: bound both ways to its PV", pv["spec"]["claimRef"] == {"namespace": pvc["metadata"]["namespace"], "name": pvc["metadata"]["name"]}
                  and pvc["spec"]["storageClassName"] == pv["spec"]["storageClassName"] == "")

        apps = [x for x in kind("Deployment")]
        check("two application Deployments", len(apps) == 2)
        inline = persistent = 0
        for app in apps:
            n = app["metadata"]["name"]
            aspec = app["spec"]["template"]["spec"]
            psc = aspec["securityContext"]
            check(f"{n}: non-root", psc["runAsNonRoot"] is True and psc["runAsUser"] != 0)
            for c in aspec.get("initContainers", []) + aspec["containers"]:
                sc = c["securityContext"]
                check(f"{n}/{c['name']}: no privileges", not sc.get("privileged") and sc["allowPrivilegeEscalation"] is False
                      and sc["capabilities"]["drop"] == ["ALL"] and sc.get("runAsUser", 1) != 0)
            for v in aspec["volumes"]:
                check(f"{n}: no hostPath", "hostPath" not in v)
                if "csi" in v:
                    inline += 1
                    check(f"{n}: inline volume of this driver", v["csi"]["driver"] == driver and "brokers" in v["csi"]["volumeAttributes"])
                if "persistentVolumeClaim" in v:
                    persistent += 1
                    pvc = pvcs[(app["metadata"]["namespace"], v["persistentVolumeClaim"]["claimName"])]
                    check(f"{n}: its claim's volume is this driver's", pvs[pvc["spec"]["volumeName"]]["spec"]["csi"]["driver"] == driver)
            check(f"{n}: its namespace is restricted", one("Namespace", app["metadata"]["namespace"])["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted")
        check("one inline volume and one claim", inline == 1 and persistent == 1)
        PY
        """#, env: ["DIR": manifests, "DRIVER": name, "MOUNT_GROUP": mountGroup ? "true" : "false"], timeout: 60)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdout.contains("FAIL"), r.stdout)
        XCTAssertEqual(r.stdout.split(separator: "\n").count, 41, r.stdout)
    }

    /// The DaemonSet's own command line, with its container paths under the test directory: the plugin
    /// serves on the socket the sidecars dial, with the node's name, and keeps its state where it said.
    func testDaemonSetCommandLineServes() throws {
        stopPlugin()
        let r = shell(#"""
        python3 - "$DIR" <<'PY'
        import yaml
        import sys
        (ds,) = [x for x in yaml.safe_load_all(open(sys.argv[1] + "/node-daemonset.yaml")) if x and x["kind"] == "DaemonSet"]
        (c,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if "dnpipes-csi" in c["image"]]
        print("\n".join(c["args"]))
        PY
        """#, env: ["DIR": manifests], timeout: 30)
        XCTAssertEqual(r.status, 0, r.stderr)
        let csiDirectory = (socket as NSString).deletingLastPathComponent
        let arguments = r.stdout.split(separator: "\n").map {
            $0.replacingOccurrences(of: "/csi/", with: csiDirectory + "/").replacingOccurrences(of: "$(NODE_NAME)", with: "node-from-env")
        }
        XCTAssertEqual(arguments.count, 3, "\(arguments)")
        try startPlugin(arguments: arguments)
        XCTAssertEqual((try ok("Node.NodeGetInfo"))["node_id"] as? String, "node-from-env")
        let mnt = target()
        try ok("Node.NodePublishVolume", publishRequest(target: mnt))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: csiDirectory + "/state/volumes").count, 1)
        try ok("Node.NodeUnpublishVolume", ["volume_id": "pipes-volume", "target_path": mnt])
    }

    func testDockerfileBuildsThePluginAndDNPipes() throws {
        let text = try String(contentsOfFile: manifests + "/Dockerfile", encoding: .utf8)
        let from = text.split(separator: "\n").filter { $0.hasPrefix("FROM ") }
        XCTAssertEqual(from.count, 2, "multi-stage: \(from)")
        XCTAssertTrue(text.contains("--product dnpipes ") && text.contains("--product dnpipes-csi "), "builds both binaries")
        XCTAssertTrue(text.contains("ENTRYPOINT [\"/usr/local/bin/dnpipes-csi\"]"))
        // What the build copies exists and is let through by the build's ignore file.
        let ignore = try String(contentsOfFile: manifests + "/Dockerfile.dockerignore", encoding: .utf8)
        for line in text.split(separator: "\n") where line.hasPrefix("COPY ") && !line.contains("--from") {
            for source in line.split(separator: " ").dropFirst().dropLast() where !source.hasSuffix("*") {
                XCTAssertTrue(FileManager.default.fileExists(atPath: repositoryRoot + "/" + source), "COPY \(source)")
                XCTAssertTrue(ignore.contains("!" + source), "\(source) is ignored by Dockerfile.dockerignore")
            }
        }
        let daemonSet = try String(contentsOfFile: manifests + "/node-daemonset.yaml", encoding: .utf8)
        XCTAssertTrue(daemonSet.contains("image: registry.example.com/dnpipes-csi:latest"))
        XCTAssertTrue(text.contains("-t registry.example.com/dnpipes-csi:latest"))
    }
}
