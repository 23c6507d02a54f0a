import CoreMetrics
import Foundation
import Logging
import Prometheus
import DNPipesFileSystem
import DNPipesFUSE
#if canImport(Glibc)
import Glibc
#endif

/// Serves the daemon's metrics in Prometheus' text format at `http://HOST:PORT/metrics`.
///
/// A small HTTP/1.1 server on a thread of its own, one connection at a time, each closed after its answer:
/// a scraper asks every few seconds, and nothing here touches a FUSE thread or waits for the brokers (the
/// gauges are brought up to date from memory, see `PipeSeries.refresh`). A client that sends nothing is
/// dropped after a few seconds, so it cannot hold the server.
final class MetricsServer: Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    let registry: PrometheusCollectorRegistry
    private let socket: Int32
    private let logger: Logger
    /// Brings gauges up to date before each answer.
    private let refresh: @Sendable () -> Void

    /// Binds `address` (HOST:PORT, `[::1]:PORT` for IPv6) and bootstraps swift-metrics with a Prometheus
    /// registry. Throws when the address is malformed or taken.
    init(address: String, logger: Logger, refresh: @escaping @Sendable () -> Void) throws {
        let (host, port) = try MetricsServer.split(address)
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var found: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, port, &hints, &found)
        guard rc == 0, let info = found else {
            throw Failure(description: "metrics address \(address): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(found) }
        let fd = Glibc.socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "metrics address \(address): socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0, listen(fd, 16) == 0 else {
            let code = errno
            close(fd)
            throw Failure(description: "metrics address \(address): cannot listen: \(String(cString: strerror(code)))")
        }
        socket = fd
        self.logger = logger
        self.refresh = refresh
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[FuseMetrics.durationName] = FuseMetrics.durationBuckets
        MetricsSystem.bootstrap(factory)
        FuseMetrics.enable()
    }

    /// HOST and PORT of `HOST:PORT` or `[HOST]:PORT`.
    static func split(_ address: String) throws -> (String, String) {
        let bad = Failure(description: "metrics address '\(address)' is not HOST:PORT (e.g. 127.0.0.1:9464)")
        guard let colon = address.lastIndex(of: ":") else { throw bad }
        var host = String(address[..<colon])
        let port = String(address[address.index(after: colon)...])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let number = Int(port), (1...65535).contains(number) else { throw bad }
        return (host, port)
    }

    /// Starts answering, on a thread of its own, until the process exits.
    func start() {
        let thread = Thread { [self] in serve() }
        thread.name = "dnpipes.metrics"
        thread.start()
    }

    private func serve() {
        while true {
            let client = accept(socket, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                logger.error("metrics server stopped", metadata: ["op": "accept", "errno": "\(errno)"])
                return
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            answer(client)
            close(client)
        }
    }

    private func answer(_ client: Int32) {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // The request line and headers, up to the blank line (a GET has no body).
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while request.count < 16 << 10 {
            let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            request += buffer[0..<n]
            if request.count >= 4 && request.suffix(4) == [13, 10, 13, 10] { break }
            if request.count >= 2 && request.suffix(2) == [10, 10] { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self).split(separator: " ")
        guard line.count >= 2 else { return send(client, status: "400 Bad Request", body: Array("bad request\n".utf8)) }
        let path = line[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard line[0] == "GET" || line[0] == "HEAD" else {
            return send(client, status: "405 Method Not Allowed", body: Array("only GET\n".utf8))
        }
        guard path == "/metrics" else { return send(client, status: "404 Not Found", body: Array("see /metrics\n".utf8)) }
        refresh()
        var body: [UInt8] = []
        registry.emit(into: &body)
        send(client, status: "200 OK", body: line[0] == "HEAD" ? [] : body, type: "text/plain; version=0.0.4; charset=utf-8",
             length: body.count)
    }

    private func send(_ client: Int32, status: String, body: [UInt8], type: String = "text/plain; charset=utf-8",
                      length: Int? = nil) {
        let head = "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(length ?? body.count)\r\nConnection: close\r\n\r\n"
        var out = Array(head.utf8) + body
        var sent = 0
        while sent < out.count {
            let n = out.withUnsafeMutableBytes { Glibc.send(client, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }
}
