import DNPipesTestSupport
import Foundation
import XCTest

/// Pieces for tests in which the broker goes away: a TCP relay in front of it (cutting the relay is what an
/// outage looks like to a daemon; pointing it at a new port is how a restarted broker is reached), and a tansu
/// broker whose storage (S3 on a local moto server) outlives it. Every process is bounded by `timeout`.
enum BrokerRig {
    /// Forwards 127.0.0.1:`listen` to 127.0.0.1:`target` until `stopRelay`; with `tls` (a certificate and
    /// its key, PEM files) it accepts TLS and forwards plain TCP. Returns once it accepts.
    static func startRelay(listen: Int, target: Int, tls: (certificate: String, key: String)? = nil) -> Bool {
        let tlsSetup = tls.map { "ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); ctx.load_cert_chain(\"\($0.certificate)\", \"\($0.key)\")" } ?? "ctx = None"
        return shell("""
        nohup timeout 900 python3 -c '
        import asyncio, ssl
        \(tlsSetup)
        async def pump(r, w):
            try:
                while True:
                    data = await r.read(65536)
                    if not data: break
                    w.write(data); await w.drain()
            except Exception: pass
            finally: w.close()
        async def handle(cr, cw):
            try: sr, sw = await asyncio.open_connection("127.0.0.1", \(target))
            except Exception: cw.close(); return
            await asyncio.gather(pump(cr, sw), pump(sr, cw))
        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", \(listen), reuse_address=True, ssl=ctx)
            async with server: await server.serve_forever()
        asyncio.run(main())
        ' relay-\(listen) > /dev/null 2>&1 &
        """, timeout: 30).status == 0 && waitForListener(listen, seconds: 10)
    }

    /// Forwards 127.0.0.1:`listen` to 127.0.0.1:`target` for clients that authenticate first with SASL/PLAIN
    /// as `user` with `password`, the way a Kafka broker with a SASL listener does (tansu cannot keep its own
    /// users). The relay answers SaslHandshake and SaslAuthenticate itself, passes ApiVersions to the broker,
    /// and closes a connection whose credentials are wrong or that sends anything else before authenticating.
    /// The script is written to `directory`. Returns once it accepts; `stopRelay` stops it.
    static func startSASLRelay(listen: Int, target: Int, user: String, password: String, directory: String) -> Bool {
        let script = directory + "/sasl-relay.py"
        _ = FileManager.default.createFile(atPath: script, contents: Data(saslRelayScript.utf8))
        return shell("""
        nohup timeout 900 python3 "\(script)" \(listen) \(target) '\(user)' '\(password)' relay-\(listen) > "\(directory)/sasl-relay.log" 2>&1 &
        """, timeout: 30).status == 0 && waitForListener(listen, seconds: 10)
    }

    private static let saslRelayScript = #"""
    import asyncio, struct, sys
    listen, target = int(sys.argv[1]), int(sys.argv[2])
    user, password = sys.argv[3].encode(), sys.argv[4].encode()
    API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36

    def frame(body):
        return struct.pack(">i", len(body)) + body

    def uvarint(b, i):
        value, shift = 0, 0
        while True:
            x = b[i]; i += 1
            value |= (x & 0x7F) << shift
            if not x & 0x80:
                return value, i
            shift += 7

    def skip_tags(b, i):
        count, i = uvarint(b, i)
        for _ in range(count):
            _, i = uvarint(b, i)
            size, i = uvarint(b, i)
            i += size
        return i

    def handshake(corr, body, i):
        n = struct.unpack(">h", body[i:i + 2])[0]
        mechanism = body[i + 2:i + 2 + n]
        error = 0 if mechanism == b"PLAIN" else 33  # UNSUPPORTED_SASL_MECHANISM
        return frame(struct.pack(">ihih", corr, error, 1, 5) + b"PLAIN")

    def authenticate(corr, version, body, i):
        if version >= 2:
            i = skip_tags(body, i)
            n, i = uvarint(body, i)
            token = body[i:i + n - 1]
        else:
            n = struct.unpack(">i", body[i:i + 4])[0]
            token = body[i + 4:i + 4 + n]
        parts = token.split(b"\0")
        ok = len(parts) == 3 and parts[1] == user and parts[2] == password
        error = 0 if ok else 58  # SASL_AUTHENTICATION_FAILED
        message = b"Authentication failed: invalid user name or password"
        if version >= 2:
            out = struct.pack(">i", corr) + b"\0" + struct.pack(">h", error)
            out += b"\0" if ok else bytes([len(message) + 1]) + message
            out += b"\1" + struct.pack(">q", 0) + b"\0"
        else:
            out = struct.pack(">ih", corr, error)
            out += struct.pack(">h", -1) if ok else struct.pack(">h", len(message)) + message
            out += struct.pack(">i", 0)
            if version >= 1:
                out += struct.pack(">q", 0)
        return frame(out), ok

    async def read_frame(r):
        size = await r.readexactly(4)
        return size + await r.readexactly(struct.unpack(">i", size)[0])

    async def pump(r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
                await w.drain()
        except Exception:
            pass
        finally:
            w.close()

    async def handle(cr, cw):
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", target)
        except Exception:
            cw.close()
            return
        try:
            while True:
                request = await read_frame(cr)
                key, version, corr, client = struct.unpack(">hhih", request[4:14])
                i = 14 + max(client, 0)
                if key == API_VERSIONS:
                    sw.write(request)
                    await sw.drain()
                    cw.write(await read_frame(sr))
                elif key == SASL_HANDSHAKE:
                    cw.write(handshake(corr, request, i))
                elif key == SASL_AUTHENTICATE:
                    answer, ok = authenticate(corr, version, request, i)
                    cw.write(answer)
                    await cw.drain()
                    print("authenticated" if ok else "refused", flush=True)
                    if not ok:
                        raise ConnectionError("refused")
                    break
                else:
                    print(f"request {key} before authentication: closed", flush=True)
                    raise ConnectionError("unauthenticated")
                await cw.drain()
        except Exception:
            cw.close()
            sw.close()
            return
        await asyncio.gather(pump(cr, sw), pump(sr, cw))

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
    """#

    /// Stops the relay, cutting every connection through it at once.
    static func stopRelay(listen: Int) {
        shell("pkill -f 'relay-\(listen)' ; for i in $(seq 50); do pgrep -f 'relay-\(listen)' >/dev/null || exit 0; sleep 0.1; done", timeout: 10)
    }

    /// Starts tansu (memory storage) listening on `listen` and advertising `advertise` (a relay's port).
    static func startBroker(listen: Int, advertise: Int) throws -> Process {
        guard let tansu = findExecutable("tansu") else { XCTFail("tansu not installed"); throw XCTSkip("no tansu") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        p.arguments = ["900", tansu, "broker", "--listener-url", "tcp://127.0.0.1:\(listen)",
                       "--advertised-listener-url", "tcp://127.0.0.1:\(advertise)"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        XCTAssertTrue(waitForListener(listen), "tansu did not listen on \(listen)")
        return p
    }

    /// Freezes (SIGSTOP: connections stay open, nothing answers) or thaws (SIGCONT) a broker that
    /// `startBroker` started: the tansu under the `timeout` that bounds its life, since a stopped parent leaves
    /// its child running. Returns the processes signalled (none means the broker was not found).
    @discardableResult
    static func signalBroker(_ broker: Process, _ signal: Int32) -> [pid_t] {
        let pids = shell("pgrep -P \(broker.processIdentifier)", timeout: 10).stdout
            .split(separator: "\n").compactMap { pid_t($0) }
        pids.forEach { kill($0, signal) }
        return pids
    }

    /// Waits until something accepts connections on the port.
    static func waitForListener(_ port: Int, seconds: Int = 20) -> Bool {
        shell("for i in $(seq \(seconds * 10)); do (exec 3<>/dev/tcp/127.0.0.1/\(port)) 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
              timeout: seconds + 5).status == 0
    }
}

/// A tansu broker on S3 storage (a moto server on loopback), so that messages survive stopping it.
final class S3BackedBroker {
    let s3Port = freeLoopbackPort()
    let advertisedPort: Int
    private(set) var brokerPort = 0
    private var moto: Process?
    private var tansu: Process?
    private let logDirectory: String

    init(advertisedPort: Int, logDirectory: String) {
        self.advertisedPort = advertisedPort
        self.logDirectory = logDirectory
    }

    /// Starts moto and creates the bucket; nil on success, else why not.
    func startStorage() -> String? {
        guard let motoServer = findExecutable("moto_server") else { return "moto_server is not installed (scripts/setup --test installs it)" }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        p.arguments = ["900", motoServer, "-H", "127.0.0.1", "-p", String(s3Port)]
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        do { try p.run() } catch { return "cannot start moto_server: \(error)" }
        moto = p
        guard BrokerRig.waitForListener(s3Port) else { return "moto_server did not listen on \(s3Port)" }
        let r = shell("""
        python3 -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:\(s3Port)', aws_access_key_id='test', \
        aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket='tansu')"
        """, timeout: 30)
        return r.status == 0 ? nil : "cannot create the bucket: \(r.stderr)"
    }

    /// Starts tansu on a fresh port (a restarted broker cannot always bind its old port while connections to
    /// it linger in TIME_WAIT); clients reach it through the relay on `advertisedPort`.
    func startBroker() -> String? {
        guard let path = findExecutable("tansu") else { return "tansu is not installed" }
        brokerPort = freeLoopbackPort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        p.arguments = ["900", path, "broker", "--storage-engine", "s3://tansu/",
                       "--listener-url", "tcp://127.0.0.1:\(brokerPort)",
                       "--advertised-listener-url", "tcp://127.0.0.1:\(advertisedPort)"]
        var environment = ProcessInfo.processInfo.environment
        environment["AWS_ENDPOINT"] = "http://127.0.0.1:\(s3Port)"
        environment["AWS_ALLOW_HTTP"] = "true"
        environment["AWS_ACCESS_KEY_ID"] = "test"
        environment["AWS_SECRET_ACCESS_KEY"] = "test"
        environment["AWS_DEFAULT_REGION"] = "us-east-1"
        p.environment = environment
        let log = logDirectory + "/tansu-\(brokerPort).log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: log)
        p.standardError = FileHandle(forWritingAtPath: log)
        do { try p.run() } catch { return "cannot start tansu: \(error)" }
        tansu = p
        return BrokerRig.waitForListener(brokerPort) ? nil : "tansu did not listen on \(brokerPort) (\(log))"
    }

    /// Stops the broker process (SIGTERM, then SIGKILL after 5 s: the `timeout` wrapper passes both on).
    func stopBroker() {
        guard let p = tansu else { return }
        p.terminate()
        let deadline = Date().addingTimeInterval(5)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        if p.isRunning {
            shell("pkill -KILL -f 'listener-url tcp://127.0.0.1:\(brokerPort)( |$)'", timeout: 10)
            kill(p.processIdentifier, SIGKILL)
        }
        p.waitUntilExit()
        tansu = nil
    }

    func stopAll() {
        stopBroker()
        moto?.terminate()
        moto?.waitUntilExit()
        moto = nil
    }
}
