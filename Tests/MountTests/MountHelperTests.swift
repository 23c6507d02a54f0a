import DNPipesTestSupport
import Foundation
import XCTest

/// The repository this test file belongs to (for the scripts, units and manifests it checks).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// `mount -t dnpipes`, /etc/fstab lines and `umount` through mount-helpers/mount.dnpipes (installed as
/// /sbin/mount.dnpipes for the test, and the previous state restored after it), scripts/install, the systemd
/// unit, and the Kubernetes example.
final class MountHelperTests: MountTestCase {
    override class var backend: Backend { .embedded }
    override var mountsInSetUp: Bool { false }

    static let installedHelper = "/sbin/mount.dnpipes"
    var helperSource: String { repositoryRoot + "/mount-helpers/mount.dnpipes" }
    /// What /sbin/mount.dnpipes was before the test: its content and mode, or nil when there was none.
    private var previousHelper: (data: Data, mode: Int)?

    override func setUpWithError() throws {
        try super.setUpWithError()
        let fm = FileManager.default
        if let data = fm.contents(atPath: Self.installedHelper),
           let mode = (try? fm.attributesOfItem(atPath: Self.installedHelper))?[.posixPermissions] as? Int {
            previousHelper = (data, mode)
        }
        let r = shell("install -m 0755 \(quote(helperSource)) \(Self.installedHelper)")
        guard r.status == 0 else {
            XCTFail("cannot install the helper: \(r.stderr)")
            throw XCTSkip("helper not installed")
        }
        try Self.emulator.write(toFile: root + "/emulate.py", atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws {
        try super.tearDownWithError()
        if let previousHelper {
            _ = FileManager.default.createFile(atPath: Self.installedHelper, contents: previousHelper.data,
                                           attributes: [.posixPermissions: previousHelper.mode])
        } else {
            try? FileManager.default.removeItem(atPath: Self.installedHelper)
        }
    }

    /// Shell functions for the scripts below: `umount_wait MNT` unmounts with umount(8) and waits until the
    /// mount's daemon has exited (umount(8) does not wait for it), failing if it does not.
    let prelude = #"""
    pidfile() { printf '/run/dnpipes/%s.pid' "$(printf '%s' "$1" | sed 's/%/%25/g; s|/|%2F|g')"; }
    umount_wait() {
      local pid
      pid=$(cat "$(pidfile "$1")" 2>/dev/null) || pid=""
      umount "$1" || return 1
      [ -n "$pid" ] || return 0
      for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
      echo "daemon $pid of $1 still running 30 s after umount" >&2; return 1
    }
    mounted() { grep -q " $1 fuse.dnpipes " /proc/self/mounts; }

    """#

    /// Runs a script in the test root, with MNT, DATA, ROOT, REPO, DNPIPES and DNPIPES_BIN (for the helper)
    /// set.
    @discardableResult
    func run(_ script: String, env: [String: String] = [:], timeout: Int = 60,
             file: StaticString = #filePath, line: UInt = #line) -> ShellResult {
        var environment = ["MNT": mnt, "DATA": data, "ROOT": root, "REPO": repositoryRoot,
                           "DNPIPES": dnpipesBinary, "DNPIPES_BIN": dnpipesBinary]
        for (k, v) in env { environment[k] = v }
        return shell(prelude + script, cwd: root, env: environment, timeout: timeout, file: file, line: line)
    }

    /// Runs a script that must succeed; returns its standard output.
    @discardableResult
    func must(_ script: String, env: [String: String] = [:], timeout: Int = 60,
              file: StaticString = #filePath, line: UInt = #line) -> String {
        let r = run(script, env: env, timeout: timeout, file: file, line: line)
        XCTAssertEqual(r.status, 0, "script failed: \(script)\nstdout: \(r.stdout)\nstderr: \(r.stderr)", file: file, line: line)
        return r.stdout
    }

    // MARK: mount(8) and umount(8)

    func testMountTypeDnpipesThenUmount() {
        let out = must("""
        mount -t dnpipes "$DATA" "$MNT" -o noatime,_netdev
        grep " $MNT " /proc/self/mounts | cut -d' ' -f1,3
        echo hello > "$MNT/p"; seq 1 3 > "$MNT/p"
        cat "$MNT/.drain/p"
        umount_wait "$MNT" && echo unmounted
        mounted "$MNT" || echo gone
        mount -t dnpipes "$DATA" "$MNT"
        cat "$MNT/.drain/p" | wc -l
        umount_wait "$MNT"
        """)
        XCTAssertEqual(out, "dnpipes:\(data) fuse.dnpipes\nhello\n1\n2\n3\nunmounted\ngone\n4\n",
                       "mounted by mount(8), usable, unmounted by umount(8) with the daemon gone, messages kept")
    }

    func testFstabLines() throws {
        let out = must("""
        mkdir -p "$ROOT/m2" "$ROOT/m3" "$ROOT/m4"
        cat > "$ROOT/fstab" <<EOF
        # the form the mount table shows (dnpipes:SOURCE), so that mount -a knows what is mounted
        dnpipes:$DATA     $MNT      dnpipes  noatime,_netdev,allow_other,max_message=10  0 0
        dnpipes:$ROOT/d2  $ROOT/m2  dnpipes  noauto,_netdev  0 0
        dnpipes:$ROOT/d3  $ROOT/m3  dnpipes  defaults  0 0
        # the plain form
        $ROOT/d4          $ROOT/m4  dnpipes  noauto,nofail  0 0
        EOF
        state() { for m in "$MNT" "$ROOT/m2" "$ROOT/m3" "$ROOT/m4"; do mounted "$m" && printf 'M' || printf '-'; done; echo; }
        quiet() { "$@" 2> "$ROOT/err"; local s=$?; [ $s -eq 0 ] && [ ! -s "$ROOT/err" ] || { echo "exit $s:"; cat "$ROOT/err"; }; }
        quiet mount --fstab "$ROOT/fstab" "$MNT"; state
        grep " $MNT " /proc/self/mounts | grep -q allow_other && echo allow_other
        echo 0123456789 > "$MNT/p" && echo ten-bytes-pushed
        echo 0123456789a > "$MNT/p" 2>/dev/null || echo eleven-bytes-refused
        umount_wait "$MNT"; state
        quiet mount -a --fstab "$ROOT/fstab" -O _netdev; state      # _netdev lines only, and not noauto
        quiet mount -a --fstab "$ROOT/fstab"; state                 # all but noauto; $MNT is already mounted
        quiet mount -a --fstab "$ROOT/fstab"; state                 # again: nothing to do
        quiet mount --fstab "$ROOT/fstab" "$ROOT/m2"; state         # noauto: mounted when named
        quiet mount --fstab "$ROOT/fstab" "$ROOT/m4"; state
        grep -c " $MNT fuse.dnpipes " /proc/self/mounts            # once, not mounted over itself
        for m in "$MNT" "$ROOT/m2" "$ROOT/m3" "$ROOT/m4"; do umount_wait "$m"; done; state
        """)
        XCTAssertEqual(out, """
        M---
        allow_other
        ten-bytes-pushed
        eleven-bytes-refused
        ----
        M---
        M-M-
        M-M-
        MMM-
        MMMM
        1
        ----

        """)
    }

    func testKafkaSourceAndFstabLineOnOneCluster() throws {
        let broker = try KafkaBroker.require()
        let prefix = "h\(UInt32.random(in: 0...UInt32.max))-"
        let out = must("""
        mount -t dnpipes "kafka://$BROKER" "$MNT" -o _netdev,topic_prefix=$PREFIX,data_dir=$DATA
        grep " $MNT " /proc/self/mounts | cut -d' ' -f1,3
        echo via-kafka > "$MNT/p"
        mkdir -p "$ROOT/m2"
        echo "dnpipes:kafka://$BROKER $ROOT/m2 dnpipes _netdev,nofail,noatime,topic_prefix=$PREFIX,data_dir=$ROOT/d2 0 0" > "$ROOT/fstab"
        mount --fstab "$ROOT/fstab" "$ROOT/m2"
        for i in $(seq 150); do grep -q via-kafka "$ROOT/m2/.drain/p" 2>/dev/null && break; sleep 0.1; done
        cat "$ROOT/m2/.drain/p"
        mount -a --fstab "$ROOT/fstab" && grep -c " $ROOT/m2 " /proc/self/mounts   # already mounted: left alone
        umount_wait "$ROOT/m2"; umount_wait "$MNT"
        mounted "$MNT" || mounted "$ROOT/m2" || echo both-gone
        """, env: ["BROKER": broker.address, "PREFIX": prefix], timeout: 90)
        XCTAssertEqual(out, "dnpipes:kafka://\(broker.address) fuse.dnpipes\nvia-kafka\n1\nboth-gone\n",
                       "a second mount (another host) on the same brokers and prefix sees the first one's message")
    }

    func testKafkaSourceWithSeveralBrokers() throws {
        // fstab lines name a cluster by several bootstrap brokers; here two addresses of one broker.
        let broker = try KafkaBroker.require()
        let r = run("""
        mount -t dnpipes "kafka://$BROKER,localhost:$PORT" "$MNT" -o topic_prefix=$PREFIX,data_dir=$DATA || exit 1
        echo two > "$MNT/p"; cat "$MNT/.drain/p"
        umount_wait "$MNT"
        """, env: ["BROKER": broker.address, "PORT": String(broker.port), "PREFIX": "b\(UInt32.random(in: 0...UInt32.max))-"],
              timeout: 90)
        XCTAssertEqual(r.status, 0, "mount with two brokers failed: \(r.stderr)")
        XCTAssertEqual(r.stdout, "two\n")
    }

    func testNetdevWaitsForTheBrokers() throws {
        _ = try KafkaBroker.require()   // tansu is there
        let port = freeLoopbackPort()
        let out = must("""
        start=$(date +%s)
        mount -t dnpipes "kafka://127.0.0.1:$PORT" "$MNT" -o _netdev,netdev_timeout=40,topic_prefix=n-,data_dir=$DATA \
          > "$ROOT/mount.out" 2>&1 & m=$!
        sleep 2   # the network (the broker) comes up only now
        timeout 120 tansu broker --listener-url tcp://127.0.0.1:$PORT --advertised-listener-url tcp://127.0.0.1:$PORT \
          > "$ROOT/tansu.log" 2>&1 & t=$!
        wait $m; status=$?
        [ $(( $(date +%s) - start )) -ge 2 ] && echo "waited, then exit $status"
        echo after-wait > "$MNT/p" && cat "$MNT/.drain/p"
        umount_wait "$MNT"
        kill $t; wait $t 2>/dev/null
        true
        """, env: ["PORT": String(port)], timeout: 120)
        XCTAssertEqual(out, "waited, then exit 0\nafter-wait\n")

        // Never reachable: the helper gives up after netdev_timeout and lets dnpipes report (here a stand-in).
        let dead = freeLoopbackPort()
        let r = run("""
        start=$(date +%s)
        DNPIPES_BIN=/bin/true mount.dnpipes "kafka://127.0.0.1:\(dead),[::1]:\(dead)" "$MNT" -o _netdev,netdev_timeout=1; echo "exit $?"
        [ $(( $(date +%s) - start )) -le 10 ] && echo bounded
        DNPIPES_BIN=/bin/true mount.dnpipes "kafka://127.0.0.1:\(dead)" "$MNT" -o noatime; echo "without _netdev: exit $?"
        """, env: ["PATH": "/sbin:/usr/sbin:/usr/bin:/bin"], timeout: 30)
        XCTAssertEqual(r.stdout, "exit 0\nbounded\nwithout _netdev: exit 0\n")
        XCTAssertEqual(r.stderr.components(separatedBy: "reachable after 1s").count, 2,
                       "one give-up message, for the _netdev mount only: \(r.stderr)")
    }

    // MARK: failures, nofail, and arguments

    func testNofailTurnsAFailedMountIntoAWarning() {
        let out = must("""
        touch "$ROOT/a-file"
        try() { "$@" 2> "$ROOT/err"; echo "exit $? $(grep -c 'warning: .*nofail' "$ROOT/err")"; mounted "$MNT" && echo MOUNTED; true; }
        try mount -t dnpipes "$ROOT/a-file" "$MNT" -o nofail                                 # the store cannot open
        try mount -t dnpipes "$ROOT/a-file" "$MNT"
        try mount -t dnpipes not-a-source "$MNT" -o rw,nofail,_netdev                         # neither a path nor kafka://
        try mount -t dnpipes not-a-source "$MNT"
        DNPIPES_BIN="$ROOT/missing" try mount -t dnpipes "$DATA" "$MNT" -o nofail             # no binary
        try mount -t dnpipes "$DATA" "$MNT" -o nofail,bogus_option                            # refused by dnpipes
        try mount -t dnpipes "$DATA" "$MNT" -o nofail                                         # fine: mounts
        umount_wait "$MNT"
        """)
        XCTAssertEqual(out, """
        exit 0 1
        exit 1 0
        exit 0 1
        exit 32 0
        exit 0 1
        exit 0 1
        exit 0 0
        MOUNTED

        """)
    }

    /// A stand-in for the binary that prints each argument it gets on a line of its own, in brackets.
    func installArgumentPrinter() -> String {
        let path = root + "/fake/dnpipes"
        must(#"""
        mkdir -p "$ROOT/fake"
        printf '#!/bin/sh\nfor a in "$@"; do printf "[%%s]\\n" "$a"; done > "$FAKE_OUT"\n' > "$ROOT/fake/dnpipes"
        chmod 755 "$ROOT/fake/dnpipes"
        """#)
        return path
    }

    func testSourceAndOptionsCannotInjectCommands() throws {
        let fake = installArgumentPrinter()
        let marker = "/tmp/dnpipes-pwned-\(UInt32.random(in: 0...UInt32.max))"
        let source = "/srv/$(touch pwned-1);touch pwned-2; `touch pwned-3` $(touch \(marker)) x"
        let options = "topic_prefix=$(touch pwned-4),kafka.client.id=a b;touch pwned-5,kafka.x=`touch pwned-6`|touch pwned-7&"
        let target = root + "/mount point $(touch pwned-8);`touch pwned-9`"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let env = ["DNPIPES_BIN": fake, "FAKE_OUT": root + "/args", "SRC": source, "OPTS": options, "TARGET": target]

        // Through mount(8), and by calling the helper directly the way mount(8) does (with -v, which prints).
        must(#"mount -t dnpipes "$SRC" "$TARGET" -o "$OPTS""#, env: env)
        XCTAssertEqual(try String(contentsOfFile: root + "/args", encoding: .utf8),
                       "[\(source)]\n[\(target)]\n[-o]\n[rw,\(options)]\n", "every value arrives as it was given")
        let r = run(#"/sbin/mount.dnpipes "$SRC" "$TARGET" -sv -o "$OPTS" -n"#, env: env)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try String(contentsOfFile: root + "/args", encoding: .utf8),
                       "[\(source)]\n[\(target)]\n[-o]\n[\(options)]\n")
        XCTAssertTrue(r.stderr.contains("running:"), r.stderr)

        // A real mount whose data directory has all of that in its name.
        let odd = root + "/data $(touch pwned-10); `touch pwned-11` & x"
        let out = must(#"""
        mount -t dnpipes "$ODD" "$MNT" -o 'noatime,max_message=100,kafka.client.id=$(touch pwned-12)'
        echo odd > "$MNT/p"; cat "$MNT/.drain/p"
        [ -d "$ODD" ] && echo store-in-the-odd-directory
        umount_wait "$MNT"
        """#, env: ["ODD": odd])
        XCTAssertEqual(out, "odd\nstore-in-the-odd-directory\n")

        let pwned = must("find \"$ROOT\" / -maxdepth 1 -name 'pwned*' 2>/dev/null; ls \(marker) 2>/dev/null; true")
        XCTAssertEqual(pwned, "", "a command in a source or option ran")
    }

    func testHelperFlags() throws {
        let fake = installArgumentPrinter()
        let env = ["DNPIPES_BIN": fake, "FAKE_OUT": root + "/args"]
        // -f (fake): mount(8) calls the helper, which must mount nothing.
        let r = run(#"mount -f -v -t dnpipes "$DATA" "$MNT" -o noatime; echo "exit $?"; test -e "$ROOT/args" || echo nothing-run"#, env: env)
        XCTAssertEqual(r.stdout, "exit 0\nnothing-run\n", r.stderr)
        XCTAssertTrue(r.stderr.contains("running: \(fake)"), "-v prints the command: \(r.stderr)")
        // -s, -n, -v and the type are the helper's; they do not reach dnpipes.
        must(#"/sbin/mount.dnpipes "$DATA" "$MNT" -snv -o rw,noatime -t dnpipes.sub 2>/dev/null"#, env: env)
        XCTAssertEqual(try String(contentsOfFile: root + "/args", encoding: .utf8), "[\(data)]\n[\(mnt)]\n[-o]\n[rw,noatime]\n")
        // netdev_timeout is the helper's own option, not passed on; no -o at all when nothing is left.
        must(#"/sbin/mount.dnpipes "$DATA" "$MNT" -o netdev_timeout=5"#, env: env)
        XCTAssertEqual(try String(contentsOfFile: root + "/args", encoding: .utf8), "[\(data)]\n[\(mnt)]\n")
        // Usage errors.
        for bad in [#""$DATA""#, #""$DATA" "$MNT" -x"#, #""$DATA" "$MNT" -o"#, #""$DATA" "$MNT" extra"#,
                    #""$DATA" "$MNT" -o netdev_timeout=soon"#] {
            let u = run("/sbin/mount.dnpipes \(bad)", env: env)
            XCTAssertEqual(u.status, 1, "\(bad): \(u.stderr)")
        }
        // A relative mount point is made absolute, so that it can never be read as a flag.
        must(#"cd "$ROOT" && /sbin/mount.dnpipes ./data mnt"#, env: env)
        XCTAssertEqual(try String(contentsOfFile: root + "/args", encoding: .utf8), "[./data]\n[\(mnt)]\n")
    }

    func testBinaryIsFoundFromTheEnvironmentBesideTheHelperOrOnPath() {
        let out = must(#"""
        mkdir -p "$ROOT/bin" "$ROOT/link" "$ROOT/path" "$ROOT/env"
        cp "$REPO/mount-helpers/mount.dnpipes" "$ROOT/bin/mount.dnpipes"
        ln -s "$ROOT/bin/mount.dnpipes" "$ROOT/link/mount.dnpipes"
        for d in bin path env; do printf '#!/bin/sh\necho %s\n' "$d" > "$ROOT/$d/dnpipes"; chmod 755 "$ROOT/$d/dnpipes"; done
        pick() { "$ROOT/link/mount.dnpipes" "$DATA" "$MNT" -v -o nofail 2>/dev/null; }
        DNPIPES_BIN="$ROOT/env/dnpipes" PATH="$ROOT/path:/usr/bin:/bin" pick
        unset DNPIPES_BIN
        PATH="$ROOT/path:/usr/bin:/bin" pick            # beside the helper's real location, through the link
        rm "$ROOT/bin/dnpipes"
        PATH="$ROOT/path:/usr/bin:/bin" pick
        PATH="/usr/bin:/bin" "$ROOT/link/mount.dnpipes" "$DATA" "$MNT" -f -v -o nofail 2>&1 | grep -o /usr/local/bin/dnpipes | head -n 1
        """#)
        XCTAssertEqual(out, "env\nbin\npath\n/usr/local/bin/dnpipes\n")
    }

    func testMountInAnotherMountNamespace() {
        // mount -N runs the helper with -N; the mount belongs to that namespace only.
        let out = must(#"""
        unshare --mount --propagation private sleep 60 & ns=$!
        for i in $(seq 50); do [ "$(readlink /proc/$ns/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] && break; sleep 0.1; done
        mount -N "$ns" -t dnpipes "$DATA" "$MNT" && echo mounted
        grep -c " $MNT fuse.dnpipes " /proc/$ns/mounts
        mounted "$MNT" && echo "visible here too" || echo "not here"
        nsenter -t "$ns" -m sh -c 'echo inside > "$1/p" && cat "$1/.drain/p"' sh "$MNT"
        pid=$(cat "$(pidfile "$MNT")")
        nsenter -t "$ns" -m umount "$MNT" && echo unmounted
        for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { echo "daemon still running"; kill -TERM "$pid"; }
        kill $ns; wait $ns 2>/dev/null
        true
        """#)
        XCTAssertEqual(out, "mounted\n1\nnot here\ninside\nunmounted\n")
    }

    // MARK: scripts/install

    func testInstallScriptIsIdempotentAndKeepsLocalSettings() {
        let out = must("""
        export DESTDIR="$ROOT/stage"
        "$REPO/scripts/install" "$DNPIPES" 2>&1 | sed 's/^install: //'
        cmp "$DNPIPES" "$DESTDIR/usr/local/bin/dnpipes" && cmp "$REPO/mount-helpers/mount.dnpipes" "$DESTDIR/sbin/mount.dnpipes" && echo same
        stat -c %a "$DESTDIR/usr/local/bin/dnpipes" "$DESTDIR/sbin/mount.dnpipes"
        echo ---
        "$REPO/scripts/install" "$DNPIPES" 2>&1 | sed 's/^install: //' | grep -v '^done'
        echo ---
        "$REPO/scripts/install" --systemd "$DNPIPES" 2>&1 | grep -c 'installed /etc'
        echo DNPIPES_OPTIONS=data_dir=/srv/pipes > "$DESTDIR/etc/default/dnpipes"
        "$REPO/scripts/install" --systemd "$DNPIPES" >/dev/null 2>&1
        cat "$DESTDIR/etc/default/dnpipes"
        cmp "$REPO/mount-helpers/dnpipes@.service" "$DESTDIR/etc/systemd/system/dnpipes@.service" && echo unit
        "$REPO/scripts/install" --bogus 2>/dev/null || echo "refused: $?"
        """)
        XCTAssertEqual(out, """
        installed /usr/local/bin/dnpipes
        installed /sbin/mount.dnpipes
        done: mount -t dnpipes /var/lib/dnpipes /dnp   (or kafka://HOST:PORT as the source)
        same
        755
        755
        ---
        /usr/local/bin/dnpipes is up to date
        /sbin/mount.dnpipes is up to date
        ---
        2
        DNPIPES_OPTIONS=data_dir=/srv/pipes
        unit
        refused: 2

        """)
    }

    // MARK: the systemd unit

    var unitFile: String { repositoryRoot + "/mount-helpers/dnpipes@.service" }

    func testSystemdUnitVerifies() throws {
        guard findExecutable("systemd-analyze") != nil else {
            throw XCTSkip("systemd-analyze is not installed; testSystemdUnitFields and testSystemdUnitCommands still check the unit")
        }
        // verify checks that the programs exist: the built binary stands in for /usr/local/bin/dnpipes.
        let r = run(#"""
        mkdir -p "$ROOT/units"
        sed "s|/usr/local/bin/dnpipes|$DNPIPES|g" "$UNIT" > "$ROOT/units/dnpipes@.service"
        instance=$(systemd-escape --path "$MNT")
        ln -s "dnpipes@.service" "$ROOT/units/dnpipes@$instance.service"
        systemd-analyze verify --man=no "$ROOT/units/dnpipes@$instance.service" 2>&1
        """#, env: ["UNIT": unitFile])
        XCTAssertEqual(r.status, 0, r.stdout)
        XCTAssertFalse(r.stdout.contains("dnpipes@"), "warnings about the unit: \(r.stdout)")
    }

    func testSystemdUnitFields() throws {
        let out = must(#"""
        python3 - "$UNIT" <<'PY'
        import sys
        fields = {}
        section = None
        for raw in open(sys.argv[1]):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            fields.setdefault(f"{section}.{key}", []).append(value)
        def one(k): return fields.get(k, [""])[-1]
        start = one("Service.ExecStart").split()
        print("foreground" if "--foreground" in start and start[1] == "mount" else "NOT FOREGROUND", start)
        print("restart", one("Service.Restart"))
        print("after", "network-online.target" in " ".join(fields.get("Unit.After", [])))
        print("wants", "network-online.target" in " ".join(fields.get("Unit.Wants", [])))
        print("stop", one("Service.ExecStop").lstrip("-").split()[1])
        print("env", "/etc/default/dnpipes" in " ".join(fields.get("Service.EnvironmentFile", [])))
        print("install", one("Install.WantedBy"))
        PY
        """#, env: ["UNIT": unitFile])
        let lines = out.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.first?.hasPrefix("foreground ") ?? false, "ExecStart runs dnpipes mount --foreground: \(out)")
        XCTAssertEqual(Array(lines.dropFirst()), ["restart on-failure", "after True", "wants True", "stop unmount",
                                                  "env True", "install remote-fs.target"])
    }

    /// Runs the unit's commands as systemd would (specifiers, environment files and $VARIABLES expanded, the
    /// "-" prefix, Restart=), with /etc and /usr/local/bin/dnpipes moved into the test root: the mount comes
    /// up, a killed daemon is restarted with every message kept, and stopping unmounts.
    func testSystemdUnitCommands() {
        let out = must(#"""
        instance=$(systemd-escape --path "$MNT" 2>/dev/null) || instance=$(printf '%s' "${MNT#/}" | sed 's/-/\\x2d/g; s|/|-|g')
        mkdir -p "$ROOT/etc/dnpipes" "$ROOT/etc/default"
        echo 'DNPIPES_OPTIONS=data_dir=/nowhere' > "$ROOT/etc/default/dnpipes"
        echo "DNPIPES_OPTIONS=data_dir=$DATA,noatime" > "$ROOT/etc/dnpipes/$instance.env"   # wins over the default
        python3 "$ROOT/emulate.py" "$UNIT" "$instance" "$ROOT" "$DNPIPES" > "$ROOT/emulator.log" 2>&1 & emulator=$!
        wait_for() { for i in $(seq 300); do grep -q "$1" "$ROOT/emulator.log" && return 0; sleep 0.1; done; echo "no '$1'"; cat "$ROOT/emulator.log"; return 1; }
        wait_for "^started 1"
        seq 1 5 > "$MNT/p"
        kill -KILL "$(cat "$(pidfile "$MNT")")"       # the daemon dies
        wait_for "^started 2"
        cat "$MNT/.drain/p" | paste -sd' '
        kill -TERM $emulator; wait $emulator; echo "emulator exit $?"
        grep -E '^(exited|restarting|ExecStop|stopped)' "$ROOT/emulator.log"
        mounted "$MNT" || echo unmounted
        """#, env: ["UNIT": unitFile], timeout: 90)
        XCTAssertEqual(out, "1 2 3 4 5\nemulator exit 0\nexited -9\nrestarting\nExecStop 0\nstopped 0\nunmounted\n")
    }

    /// A small stand-in for systemd's service manager, for one unit: enough to run its commands faithfully.
    static let emulator = #"""
    import os, re, shlex, signal, subprocess, sys, time
    unit, instance, root, binary = sys.argv[1:5]

    def log(*a): print(*a, flush=True)
    def unescape(s):
        return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)
    path = "/" + "/".join(unescape(p) for p in instance.split("-"))
    def specifiers(s):
        return re.sub(r"%(.)", lambda m: {"i": instance, "I": unescape(instance), "f": path, "%": "%"}[m.group(1)], s)

    fields, section = {}, None
    for raw in open(unit):
        line = raw.strip()
        if not line or line[0] in "#;": continue
        if line.startswith("["): section = line.strip("[]"); continue
        k, _, v = line.partition("=")
        fields.setdefault(section + "." + k, []).append(v)
    def get(k, default=""): return fields.get(k, [default])[-1]

    env = {}
    for assignment in fields.get("Service.Environment", []):
        for word in shlex.split(assignment):
            k, _, v = word.partition("="); env[k] = v
    for f in fields.get("Service.EnvironmentFile", []):
        optional = f.startswith("-")
        f = specifiers(f.lstrip("-"))
        f = root + f if f.startswith("/etc/") else f
        if not os.path.exists(f):
            if optional: continue
            sys.exit("missing environment file " + f)
        for line in open(f):
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("="); env[k] = v.strip('"')

    def command(line):
        ignore = line.startswith("-")
        words = shlex.split(specifiers(line.lstrip("-@+!:")))
        argv = []
        for w in words:
            m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
            if m: argv += env.get(m.group(1), "").split(); continue
            argv.append(re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                               lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), ""), w))
        if argv[0] == "/usr/local/bin/dnpipes": argv[0] = binary
        return argv, ignore
    def run(line, timeout):
        argv, ignore = command(line)
        rc = subprocess.run(argv, timeout=timeout).returncode
        if rc != 0 and not ignore: sys.exit("%s failed: %d" % (argv, rc))

    start_timeout = float(get("Service.TimeoutStartSec", "90"))
    stop_timeout = float(get("Service.TimeoutStopSec", "90"))
    starts = 0
    def start():
        global starts
        for line in fields.get("Service.ExecStartPre", []): run(line, start_timeout)
        argv, _ = command(get("Service.ExecStart"))
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for line in fields.get("Service.ExecStartPost", []): run(line, start_timeout)
        starts += 1
        log("started", starts, argv)
        return p

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    main = start()
    while True:
        if stopping:
            # Like systemd, reap the main process as soon as it exits, also while ExecStop still runs.
            deadline = time.time() + stop_timeout
            for line in fields.get("Service.ExecStop", []):
                argv, ignore = command(line)
                stop = subprocess.Popen(argv)
                while stop.poll() is None and time.time() < deadline:
                    main.poll(); time.sleep(0.05)
                log("ExecStop", stop.returncode)
            try: rc = main.wait(timeout=max(deadline - time.time(), 1))
            except subprocess.TimeoutExpired: main.kill(); rc = main.wait()
            log("stopped", rc)
            sys.exit(0)
        rc = main.poll()
        if rc is not None:
            log("exited", rc)
            clean = rc == 0 or -rc in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)
            if get("Service.Restart", "no") in ("always", "on-failure") and not clean:
                log("restarting")
                time.sleep(min(float(get("Service.RestartSec", "0.1")), 2))
                main = start()
            else:
                log("not restarted"); sys.exit(1)
        time.sleep(0.1)
    """#

    // MARK: the Kubernetes example

    var kubernetes: String { repositoryRoot + "/examples/kubernetes" }

    func requirePyYAML() throws {
        guard shell("python3 -c 'import yaml'").status == 0 else {
            XCTFail("PyYAML is not installed (apt-get install python3-yaml)")
            throw XCTSkip("no PyYAML")
        }
    }

    func testKubernetesManifests() throws {
        try requirePyYAML()
        let out = must(#"""
        python3 - "$K8S" <<'PY'
        import sys, yaml
        d = sys.argv[1]
        def docs(f): return {x["kind"]: x for x in yaml.safe_load_all(open(f"{d}/{f}")) if x}
        daemon_docs, app_docs = docs("dnpipes-daemonset.yaml"), docs("app-deployment.yaml")
        ds, cm, app = daemon_docs["DaemonSet"], daemon_docs["ConfigMap"], app_docs["Deployment"]
        def check(name, ok): print(("ok " if ok else "FAIL ") + name)

        spec = ds["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        (c,) = spec["containers"]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        fuse = [v for v in volumes.values() if v.get("hostPath", {}).get("path") == "/dev/fuse"]
        check("daemon: /dev/fuse from the host as a character device",
              len(fuse) == 1 and fuse[0]["hostPath"].get("type") == "CharDevice" and mounts[fuse[0]["name"]]["mountPath"] == "/dev/fuse")
        check("daemon: privileged", c.get("securityContext", {}).get("privileged") is True)
        bidirectional = [m for m in mounts.values() if m.get("mountPropagation") == "Bidirectional"]
        check("daemon: one Bidirectional host-path mount", len(bidirectional) == 1 and "hostPath" in volumes[bidirectional[0]["name"]])
        node_path = volumes[bidirectional[0]["name"]]["hostPath"]["path"]
        in_container = bidirectional[0]["mountPath"]
        argv = c["command"] + c["args"]
        check("daemon: dnpipes mount on that path, in the foreground",
              argv[1:3] == ["mount", in_container] and "--foreground" in argv)
        env = {e["name"]: e for e in c["env"]}
        brokers = argv[argv.index("--brokers") + 1]
        var = brokers[2:-1] if brokers.startswith("$(") else None
        check("daemon: --brokers from the ConfigMap",
              var in env and env[var]["valueFrom"]["configMapKeyRef"]["name"] == cm["metadata"]["name"]
              and env[var]["valueFrom"]["configMapKeyRef"]["key"] in cm["data"])
        check("daemon: preStop unmounts",
              c["lifecycle"]["preStop"]["exec"]["command"][1:] == ["unmount", in_container])
        check("daemon: the ConfigMap is in the DaemonSet's namespace",
              cm["metadata"]["namespace"] == ds["metadata"]["namespace"])

        aspec = app["spec"]["template"]["spec"]
        avolumes = {v["name"]: v for v in aspec["volumes"]}
        containers = aspec.get("initContainers", []) + aspec["containers"]
        check("app: not privileged, no capabilities",
              all(not x.get("securityContext", {}).get("privileged", False)
                  and x["securityContext"]["capabilities"]["drop"] == ["ALL"]
                  and x["securityContext"]["allowPrivilegeEscalation"] is False for x in containers))
        pipe_dirs = set()
        for x in containers:
            for m in x["volumeMounts"]:
                if avolumes[m["name"]].get("hostPath", {}).get("path") == node_path:
                    pipe_dirs.add(m["mountPath"])
                    check(f"app {x['name']}: HostToContainer", m.get("mountPropagation") == "HostToContainer")
        check("app: every container mounts the node's pipe directory", len(pipe_dirs) == 1 and all(
            any(avolumes[m["name"]].get("hostPath", {}).get("path") == node_path for m in x["volumeMounts"]) for x in containers))
        (pipes,) = pipe_dirs
        scripts = {x["name"]: " ".join(x["command"]) for x in aspec["containers"]}
        import re
        check("app: a container pushes with echo to a pipe", any(re.search(r"echo .*> *" + re.escape(pipes) + r"/\w+", s) for s in scripts.values()))
        check("app: a container reads with cat from a pipe", any(re.search(r"\bcat " + re.escape(pipes) + r"/\w+", s) for s in scripts.values()))
        PY
        """#, env: ["K8S": kubernetes])
        XCTAssertFalse(out.contains("FAIL"), out)
        XCTAssertEqual(out.split(separator: "\n").count, 14, out)
    }

    func testDockerfile() throws {
        let text = try String(contentsOfFile: kubernetes + "/Dockerfile", encoding: .utf8)
        let from = text.split(separator: "\n").filter { $0.hasPrefix("FROM ") }.map(String.init)
        XCTAssertEqual(from.count, 2, "multi-stage: \(from)")
        XCTAssertTrue(from.first?.contains("swift:") == true && from.first?.contains("-bookworm") == true, "\(from)")
        XCTAssertTrue(text.contains("ARG SWIFT_VERSION=6."), "a Swift 6 image")
        XCTAssertTrue(from.last?.contains("debian:bookworm") == true, "\(from)")
        XCTAssertTrue(text.contains("RUN scripts/setup"), "scripts/setup installs libfuse3 and librdkafka >= 2.3")
        XCTAssertTrue(text.contains("fuse3"))
        XCTAssertTrue(text.contains("COPY --from=build"))
        XCTAssertTrue(text.contains("/usr/local/lib/librdkafka"), "the librdkafka that scripts/setup built goes along")
        // Every file the build stage copies exists.
        for line in text.split(separator: "\n") where line.hasPrefix("COPY ") && !line.contains("--from") {
            for source in line.split(separator: " ").dropFirst().dropLast() where !source.hasSuffix("*") {
                XCTAssertTrue(FileManager.default.fileExists(atPath: repositoryRoot + "/" + source), "COPY \(source)")
            }
        }
    }

    /// The manifests' own commands, run here the way the kubelet would run them, with the node directory in
    /// the test root and the test's broker in the ConfigMap: the daemon's mount becomes ready, the
    /// unprivileged reader (another user) gets the writer's ticks, and preStop unmounts.
    func testKubernetesCommandsWorkOnANode() throws {
        try requirePyYAML()
        let broker = try KafkaBroker.require()
        let out = must(#"""
        chmod 755 "$ROOT"
        mkdir -p "$ROOT/node-mnt"
        python3 - "$K8S" "$ROOT/node-mnt" "$DNPIPES" "$BROKER" "$PREFIX" <<'PY'
        import os, re, signal, subprocess, sys, time, yaml
        d, node_dir, binary, broker, prefix = sys.argv[1:6]
        docs = [x for f in ("dnpipes-daemonset.yaml", "app-deployment.yaml") for x in yaml.safe_load_all(open(f"{d}/{f}")) if x]
        kinds = {x["kind"]: x for x in docs}
        ds, cm, app = kinds["DaemonSet"], kinds["ConfigMap"], kinds["Deployment"]
        data = dict(cm["data"], brokers=broker, **{"topic-prefix": prefix})

        def localize(words, container, volumes):
            # The container's view of the pipe directory is the node directory here.
            for m in container["volumeMounts"]:
                if volumes[m["name"]].get("hostPath", {}).get("path") not in (None, "/dev/fuse"):
                    words = [w.replace(m["mountPath"], node_dir) for w in words]
            return [binary if w == "/usr/local/bin/dnpipes" else w for w in words]
        def expand(words, container):
            env = {e["name"]: data[e["valueFrom"]["configMapKeyRef"]["key"]] for e in container.get("env", [])}
            return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], w) for w in words]
        def start(words, user=0):
            return subprocess.Popen(words, user=user, start_new_session=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        def stop(p):
            try: os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError: pass
            return p.communicate(timeout=10)[0]

        spec = ds["spec"]["template"]["spec"]
        dsvolumes = {v["name"]: v for v in spec["volumes"]}
        (c,) = spec["containers"]
        daemon = start(localize(expand(c["command"] + c["args"], c), c, dsvolumes))
        probe = localize(c["readinessProbe"]["exec"]["command"], c, dsvolumes)
        for _ in range(300):
            if subprocess.run(probe).returncode == 0: break
            time.sleep(0.1)
        else:
            print("never ready"); stop(daemon); sys.exit(1)
        print("ready")

        aspec = app["spec"]["template"]["spec"]
        avolumes = {v["name"]: v for v in aspec["volumes"]}
        for x in aspec.get("initContainers", []):
            print(x["name"], subprocess.run(localize(x["command"], x, avolumes), timeout=20, stdout=subprocess.DEVNULL).returncode)
        containers = {x["name"]: x for x in aspec["containers"]}
        user = lambda x: x.get("securityContext", {}).get("runAsUser", 0)
        reader = start(localize(containers["reader"]["command"], containers["reader"], avolumes), user(containers["reader"]))
        writer = start(localize(containers["writer"]["command"], containers["writer"], avolumes), user(containers["writer"]))
        time.sleep(7)                 # the writer pushes at once, then every 5 seconds
        stop(writer)
        time.sleep(1)
        lines = stop(reader).splitlines()
        print("reader ran as uid", user(containers["reader"]))
        print("ticks", [re.sub(r"^\S+ (tick \d+) at .*", r"\1", l) for l in lines])

        # The hook waits for the daemon to exit; reap it as soon as it does, as the container runtime would.
        hook = subprocess.Popen(localize(c["lifecycle"]["preStop"]["exec"]["command"], c, dsvolumes))
        deadline = time.time() + 40
        while hook.poll() is None and time.time() < deadline:
            daemon.poll(); time.sleep(0.05)
        print("preStop", hook.returncode)
        print("daemon exit", daemon.wait(timeout=10))
        print("unmounted", subprocess.run(probe).returncode != 0)
        PY
        """#, env: ["K8S": kubernetes, "BROKER": broker.address, "PREFIX": "k\(UInt32.random(in: 0...UInt32.max))-"],
                       timeout: 120)
        XCTAssertEqual(out, """
        ready
        wait-for-pipes 0
        reader ran as uid 65534
        ticks ['tick 1', 'tick 2']
        preStop 0
        daemon exit 0
        unmounted True

        """)
    }
}
