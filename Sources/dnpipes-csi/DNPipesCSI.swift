import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The CSI node plugin: kubelet (through node-driver-registrar) talks to it on a unix socket; it mounts
/// dnpipes for each volume a pod publishes.
@main
struct DNPipesCSI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dnpipes-csi",
        abstract: "Kubernetes CSI node plugin for dnpipes: serves CSI v1 Identity and Node on a unix socket.",
        discussion: """
        Each published volume is a `dnpipes mount` daemon of its own, in its own session, so that it keeps \
        serving when this plugin stops or is killed; a plugin that starts again finds its volumes in the \
        state directory, keeps the live mounts and cleans up those whose daemon died. The first process \
        runs the gRPC server as a child, starts it again if it ends unasked, and reaps exited daemons.
        """
    )

    @Option(help: ArgumentHelp("Where to listen.", valueName: "unix:///path/csi.sock"))
    var endpoint: String

    @Option(help: "This node's name, as NodeGetInfo reports it.")
    var nodeId: String

    @Option(help: ArgumentHelp("Where volume records, logs and Kafka settings are kept (keep it on the node, not in the container).",
                               valueName: "dir"))
    var stateDir = "/var/lib/kubelet/plugins/\(IdentityService.driverName)/state"

    @Option(help: ArgumentHelp("The dnpipes binary.", discussion: "Default: beside this program, else on PATH.", valueName: "path"))
    var dnpipes: String?

    mutating func run() async throws {
        if !Supervisor.isServer { Supervisor.run() }
        Supervisor.followSupervisor()
        var logger = Logger(label: "dnpipes-csi")
        logger.logLevel = .info
        signal(SIGPIPE, SIG_IGN)
        let socketPath = try Self.socketPath(of: endpoint)
        let binary = dnpipes ?? Self.defaultDNPipes()
        let volumes = try Volumes(stateDirectory: stateDir, dnpipes: binary, logger: logger)
        await volumes.adopt()

        // A socket file left by an earlier run would make the bind fail.
        var st = stat()
        if lstat(socketPath, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else { throw ValidationError("\(socketPath) exists and is not a socket") }
            unlink(socketPath)
        }
        try FileManager.default.createDirectory(atPath: (socketPath as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [
            IdentityService(volumes: volumes), NodeService(nodeID: nodeId, volumes: volumes, logger: logger),
        ])
        let stop = StopSignals { server.beginGracefulShutdown() }
        logger.info("serving CSI on \(socketPath)", metadata: ["node": "\(nodeId)", "state": "\(stateDir)", "dnpipes": "\(binary)"])
        try await server.serve()
        stop.cancel()
        logger.info("stopped; published volumes stay mounted")
    }

    /// The path of a `unix://` endpoint (kubelet's form), or of a plain path.
    static func socketPath(of endpoint: String) throws -> String {
        var path = endpoint
        if path.hasPrefix("unix://") { path = String(path.dropFirst("unix://".count)) }
        guard path.hasPrefix("/") else { throw ValidationError("--endpoint must be unix:///ABSOLUTE/PATH, not \(endpoint)") }
        return path
    }

    static func defaultDNPipes() -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let beside = (me as NSString).deletingLastPathComponent + "/dnpipes"
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin").split(separator: ":") {
            let path = "\(dir)/dnpipes"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return beside
    }
}

/// SIGTERM and SIGINT stop the server (the mounts stay: they are the pods', not the plugin's).
final class StopSignals {
    private let sources: [any DispatchSourceSignal]

    init(_ stop: @escaping @Sendable () -> Void) {
        sources = [SIGTERM, SIGINT].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler(handler: stop)
            source.resume()
            return source
        }
    }

    func cancel() { sources.forEach { $0.cancel() } }
}
