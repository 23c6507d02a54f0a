import XCTest

/// Who may use a mount: by default only the user who mounted it; with allow_other, file modes decide.
final class SecurityTests: MountTestCase {
    func testOtherUsersGetEACCESForEverythingByDefault() {
        ok("echo secret > p; chmod 755 \"$ROOT\"")
        let cases = [
            "ls \"$MNT\"", "stat \"$MNT/p\"", "cat \"$MNT/.drain/p\"", "cat \"$MNT/.tail/p\"", "echo x >> \"$MNT/p\"",
            "mkfifo \"$MNT/new\"", "truncate -s 0 \"$MNT/p\"", "rm \"$MNT/p\"",
        ]
        for command in cases {
            let r = asNobody(command)
            XCTAssertNotEqual(r.status, 0, "\(command) succeeded for another user: \(r.output)")
            XCTAssertTrue(r.output.contains("Permission denied"), "\(command): \(r.output)")
        }
        XCTAssertEqual(ok("ls"), "p\n")
        XCTAssertEqual(ok("cat .drain/p"), "secret\n", "nothing another user did reached the pipe")
        XCTAssertFalse(ok("grep \" $MNT \" /proc/self/mounts").contains("allow_other"))
    }
}

/// A mount other users may use: the kernel enforces the modes dnpipes gives (pipes 0644, views 0444,
/// directories 0755, all owned by the mounting user).
final class SecurityTestsWithAllowOther: MountTestCase {
    override var mountArguments: [String] { ["-o", "allow_other"] }

    func testModesAndOwnershipAreEnforcedForOtherUsers() {
        ok("echo shared > p; chmod 755 \"$ROOT\"")
        XCTAssertTrue(ok("grep \" $MNT \" /proc/self/mounts").contains("default_permissions"))
        let listing = asNobody("stat -c '%A %U %G %n' \"$MNT\" \"$MNT/p\" \"$MNT/.drain\" \"$MNT/.drain/p\" \"$MNT/.tail/p\"")
        XCTAssertEqual(listing.status, 0, listing.output)
        XCTAssertEqual(listing.output, """
        drwxr-xr-x root root \(mnt)
        -rw-r--r-- root root \(mnt)/p
        drwxr-xr-x root root \(mnt)/.drain
        -r--r--r-- root root \(mnt)/.drain/p
        -r--r--r-- root root \(mnt)/.tail/p

        """)
        XCTAssertTrue(asNobody("ls -l \"$MNT\"").output.contains(" root root "), "ls -l shows root's ownership")
        // Reading is allowed by 0644 and 0444.
        let read = asNobody("cat \"$MNT/.drain/p\"")
        XCTAssertEqual(read.status, 0, read.output)
        XCTAssertEqual(read.output, "shared\n")
        // Writing, resetting, deleting, creating and changing modes are not.
        let refused: [(String, String)] = [
            ("echo x >> \"$MNT/p\"", "Permission denied"),
            ("echo x > \"$MNT/p\"", "Permission denied"),
            ("truncate -s 0 \"$MNT/p\"", "Permission denied"),
            ("rm -f \"$MNT/p\"", "Permission denied"),
            ("mkfifo \"$MNT/new\"", "Permission denied"),
            ("touch \"$MNT/new\"", "Permission denied"),
            ("chmod 666 \"$MNT/p\"", "Operation not permitted"),
        ]
        for (command, message) in refused {
            let r = asNobody(command)
            XCTAssertNotEqual(r.status, 0, "\(command) succeeded for another user")
            XCTAssertTrue(r.output.contains(message), "\(command): expected \(message), got \(r.output)")
        }
        XCTAssertEqual(ok("ls"), "p\n")
        XCTAssertEqual(ok("cat .drain/p"), "shared\n", "nothing another user did reached the pipe")
        ok("echo owner >> p")
        XCTAssertEqual(ok("cat .drain/p"), "shared\nowner\n")
    }
}

/// TLS and SASL settings reach librdkafka through a config file or `-o kafka.NAME=VALUE`; wrong ones fail
/// the mount with a message naming them, and no secret value is ever printed or logged.
final class SecurityTestsOnKafka: MountTestCase {
    override class var backend: Backend { .kafka }
    override var mountsInSetUp: Bool { false }

    /// Mounts with extra arguments; returns the status, everything printed, and the seconds it took.
    private func tryMount(_ extra: String, file: StaticString = #filePath, line: UInt = #line) -> (status: Int32, output: String, seconds: Int) {
        let r = sh("""
        start=$EPOCHSECONDS
        { "$DNPIPES" mount "$MNT" --data-dir "$DATA" $BACKEND \(extra); } > "$ROOT/mount.out" 2>&1
        status=$?
        echo "$status $((EPOCHSECONDS - start))"
        """, timeout: 90, file: file, line: line)
        let parts = r.stdout.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        let output = (try? String(contentsOfFile: root + "/mount.out", encoding: .utf8)) ?? ""
        return (Int32(parts.first ?? "") ?? -1, output, Int(parts.last ?? "") ?? 999)
    }

    private func writeConfig(_ lines: [String], mode: String = "600") {
        ok("printf '%s\\n' \(lines.map(quote).joined(separator: " ")) > \"$ROOT/kafka.conf\"; chmod \(mode) \"$ROOT/kafka.conf\"")
    }

    private func assertNotPrinted(_ secret: String, _ output: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(output.contains(secret), "the secret was printed: \(output)", file: file, line: line)
        XCTAssertFalse(log.contains(secret), "the secret is in the daemon's log", file: file, line: line)
    }

    func testSASLSettingsFromAPrivateConfigFileReachLibrdkafka() {
        writeConfig(["security.protocol=SASL_PLAINTEXT", "sasl.mechanism=PLAIN", "sasl.username=u", "sasl.password=s3cret-value"])
        let m = tryMount("--kafka-config \"$ROOT/kafka.conf\"")
        XCTAssertTrue(log.contains("security.protocol=SASL_PLAINTEXT"), "the settings were not used: \(log)")
        XCTAssertTrue(log.contains("sasl.password=<redacted>"), log)
        if m.status == 0 {
            // A broker that speaks SASL/PLAIN and takes any user: the mount works through it.
            ok("echo over-sasl > p")
            XCTAssertEqual(ok("cat .drain/p"), "over-sasl\n")
        } else {
            // The test broker does not authenticate this client: the mount fails in bounded time, naming
            // the brokers, and librdkafka's own lines show it tried SASL.
            XCTAssertTrue(m.output.contains("cannot reach the Kafka brokers \(KafkaBroker.shared.address)"), m.output)
            XCTAssertLessThanOrEqual(m.seconds, 40)
            XCTAssertTrue(log.contains("sasl_plaintext://") || log.contains("SASL"), "librdkafka never tried SASL: \(log)")
        }
        assertNotPrinted("s3cret-value", m.output)
    }

    func testInvalidSecuritySettingsAreRefusedNamingTheSetting() {
        writeConfig(["security.protocol=bogus", "sasl.password=s3cret-value"])
        let m = tryMount("--kafka-config \"$ROOT/kafka.conf\"")
        XCTAssertNotEqual(m.status, 0)
        XCTAssertTrue(m.output.contains("security.protocol") && m.output.contains("bogus"), m.output)
        XCTAssertLessThanOrEqual(m.seconds, 10)
        assertNotPrinted("s3cret-value", m.output)

        let m2 = tryMount("-o kafka.security.protocol=SASL_PLAINTEXT,kafka.sasl.mechanism=BOGUS,kafka.sasl.password=s3cret-cli")
        XCTAssertNotEqual(m2.status, 0)
        XCTAssertTrue(m2.output.contains("BOGUS") && m2.output.contains("SASL"), m2.output)
        XCTAssertLessThanOrEqual(m2.seconds, 10)
        assertNotPrinted("s3cret-cli", m2.output)

        // The pipe commands read the same settings.
        let push = sh("{ echo x | \"$DNPIPES\" push p $BACKEND -o kafka.security.protocol=bogus,kafka.sasl.password=s3cret-push; } 2>&1")
        XCTAssertNotEqual(push.status, 0)
        XCTAssertTrue(push.stdout.contains("security.protocol"), push.stdout)
        XCTAssertFalse(push.stdout.contains("s3cret-push"), push.stdout)
        XCTAssertEqual(ok("grep -c ' \(mnt) ' /proc/self/mounts || true"), "0\n", "nothing was mounted")
    }

    func testSSLWithAMissingCAOrKeyFailsTheMountNamingIt() {
        writeConfig(["security.protocol=SSL", "ssl.ca.location=/nonexistent/ca.pem"])
        let m = tryMount("--kafka-config \"$ROOT/kafka.conf\"")
        XCTAssertNotEqual(m.status, 0)
        XCTAssertTrue(m.output.contains("ssl.ca.location"), m.output)
        XCTAssertLessThanOrEqual(m.seconds, 10)

        writeConfig(["security.protocol=SSL", "ssl.key.location=/nonexistent/key.pem", "ssl.key.password=s3cret-value"])
        let m2 = tryMount("--kafka-config \"$ROOT/kafka.conf\"")
        XCTAssertNotEqual(m2.status, 0)
        XCTAssertTrue(m2.output.contains("ssl.key.location"), m2.output)
        assertNotPrinted("s3cret-value", m2.output)
    }

    func testConfigFilePermissionsAndMalformedLines() {
        // Group-readable is readable by others too, and every kind of secret counts.
        writeConfig(["security.protocol=PLAINTEXT", "ssl.key.password=s3cret-value"], mode: "640")
        let m = tryMount("--kafka-config \"$ROOT/kafka.conf\"")
        XCTAssertNotEqual(m.status, 0)
        XCTAssertTrue(m.output.contains("holds a secret (ssl.key.password) but other users can read it"), m.output)
        assertNotPrinted("s3cret-value", m.output)

        // A line without '=' is refused by its number, without repeating it.
        writeConfig(["sasl.password s3cret-value"])
        let m2 = tryMount("--kafka-config \"$ROOT/kafka.conf\"")
        XCTAssertNotEqual(m2.status, 0)
        XCTAssertTrue(m2.output.contains("kafka.conf:1: expected name=value"), m2.output)
        assertNotPrinted("s3cret-value", m2.output)

        // A file without secrets may be readable by anyone.
        writeConfig(["# public settings", "client.rack=rack-1", "socket.keepalive.enable=true"], mode: "644")
        let m3 = tryMount("--kafka-config \"$ROOT/kafka.conf\"")
        XCTAssertEqual(m3.status, 0, m3.output)
        XCTAssertTrue(log.contains("client.rack=rack-1"), log)
        ok("echo public-config > p")
        XCTAssertEqual(ok("cat .drain/p"), "public-config\n")
    }

    func testSecretsOnTheCommandLineAreNotLoggedEvenWithLibrdkafkaDebugging() {
        // Without SASL the credentials are unused (librdkafka warns), so the mount works; its
        // configuration dump (debug=conf) and dnpipes's own line show the settings without their values.
        let m = tryMount("-o kafka.sasl.username=u,kafka.sasl.password=s3cret-cli,kafka.debug=conf,kafka.ssl.key.password=s3cret-key")
        XCTAssertEqual(m.status, 0, m.output)
        XCTAssertTrue(log.contains("sasl.password=<redacted>"), log)
        XCTAssertTrue(log.contains("sasl.password = [redacted]") || !log.contains("sasl.password ="), "librdkafka's dump shows the value")
        ok("echo still-works > p")
        XCTAssertEqual(ok("cat .drain/p"), "still-works\n")
        assertNotPrinted("s3cret-cli", m.output)
        assertNotPrinted("s3cret-key", m.output)
    }

    /// librdkafka's own log lines go to the daemon's log; a secret setting must not reach it through them
    /// either. (An unparsable OAUTHBEARER configuration is one librdkafka quotes in its error.)
    func testSecretsDoNotReachTheLogThroughLibrdkafkaMessages() {
        writeConfig(["security.protocol=SASL_PLAINTEXT", "sasl.mechanism=OAUTHBEARER", "enable.sasl.oauthbearer.unsecure.jwt=true",
                     "sasl.oauthbearer.config=principal=dnpipes s3cret-token=abc"])
        let m = tryMount("--kafka-config \"$ROOT/kafka.conf\"")
        XCTAssertTrue(log.contains("sasl.oauthbearer.config=<redacted>"), log)
        XCTAssertLessThanOrEqual(m.seconds, 40)
        assertNotPrinted("s3cret-token", m.output)
    }
}

extension MountTestCase {
    /// Runs a command as nobody; returns its status and what it printed on either stream.
    fileprivate func asNobody(_ command: String, file: StaticString = #filePath, line: UInt = #line) -> (status: Int32, output: String) {
        // From /, so that nothing but the command itself can be refused (not the working directory).
        let r = sh("cd / && setpriv --reuid=nobody --regid=nogroup --clear-groups bash -c \(quote(command)) 2>&1",
                   timeout: 20, file: file, line: line)
        return (r.status, r.stdout + r.stderr)
    }
}
