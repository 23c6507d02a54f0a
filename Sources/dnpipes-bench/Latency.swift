import DNPipesTestSupport
import CRdKafka
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Push-to-pull latency: one message at a time, from a write on one mount to a blocked read on another,
/// against the same round trip between a plain librdkafka producer and consumer with the settings dnpipes
/// uses (idempotent, acks=all, linger.ms=2; fetch.wait.max.ms=100).
struct Latency {
    let broker: Broker
    let writerMount: PipeMount
    let readerMount: PipeMount
    let messages: Int
    let blocks = 10

    func run() throws -> [Comparison] {
        try writerMount.makePipe("latency", visibleOn: [readerMount])
        try writerMount.makePipe("latency-peer")
        let fs = try FileRoundTrip(readPath: readerMount.path + "/latency", writePath: writerMount.path + "/latency")
        defer { fs.close() }
        let peer = try ClientRoundTrip(brokers: broker.address, topic: "latency-peer")
        defer { peer.close() }
        for i in 0..<20 { _ = try fs.roundTrip(i); _ = try peer.roundTrip(i) }   // warm up both paths
        var a = [Double](), b = [Double]()
        let perBlock = max(1, messages / blocks)
        var seq = 1000
        for block in 0..<blocks {
            let viaFS = { for _ in 0..<perBlock { seq += 1; a.append(try fs.roundTrip(seq) * 1000) } }
            let viaClients = { for _ in 0..<perBlock { seq += 1; b.append(try peer.roundTrip(seq) * 1000) } }
            if block % 2 == 0 { try viaFS(); try viaClients() } else { try viaClients(); try viaFS() }
        }
        progress("latency: dnpipes p50 \(fmt(percentile(a, 50))) ms p99 \(fmt(percentile(a, 99))) ms; librdkafka p50 \(fmt(percentile(b, 50))) ms p99 \(fmt(percentile(b, 99))) ms")
        func row(_ p: Double, target: Double?) -> Comparison {
            let x = percentile(a, p), y = percentile(b, p)
            return Comparison(name: "push-to-pull latency p\(Int(p))", peerName: "librdkafka producer + consumer", unit: "ms",
                              dnpipes: x, peer: y, ratio: x / y, target: target.map { String(format: "<= %.1fx", $0) },
                              pass: target.map { x / y <= $0 }, dnpipesSamples: a, peerSamples: b)
        }
        var p99 = row(99, target: nil)
        p99.dnpipesSamples = []; p99.peerSamples = []
        return [row(50, target: 2), p99]
    }
}

/// A blocked reader on one mount and a writer on another, both held open.
final class FileRoundTrip {
    private let reader: Int32
    private let writer: Int32
    private var pending = [UInt8]()

    init(readPath: String, writePath: String) throws {
        reader = open(readPath, O_RDONLY | O_CLOEXEC)
        guard reader >= 0 else { throw BenchError("open \(readPath): \(String(cString: strerror(errno)))") }
        writer = open(writePath, O_WRONLY | O_CLOEXEC)
        guard writer >= 0 else { throw BenchError("open \(writePath): \(String(cString: strerror(errno)))") }
    }

    func roundTrip(_ seq: Int) throws -> Double {
        let line = Array("\(seq)\n".utf8)
        let start = monotonicNow()
        guard write(writer, line, line.count) == line.count else { throw BenchError("write: \(String(cString: strerror(errno)))") }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let got = Array(pending[..<nl])
                pending.removeFirst(nl + 1)
                if got == line.dropLast() { return monotonicNow() - start }
            }
            let n = read(reader, &buffer, buffer.count)
            guard n > 0 else { throw BenchError("read: \(n < 0 ? String(cString: strerror(errno)) : "end of file")") }
            pending.append(contentsOf: buffer[0..<n])
        }
    }

    func close() {
        _ = Glibc.close(writer)
        _ = Glibc.close(reader)
    }
}

/// The same round trip with two plain librdkafka clients.
final class ClientRoundTrip {
    private let producer: OpaquePointer
    private let consumer: OpaquePointer
    private let topic: String

    init(brokers: String, topic: String) throws {
        self.topic = topic
        producer = try ClientRoundTrip.client(RD_KAFKA_PRODUCER, [
            ("bootstrap.servers", brokers), ("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "2"),
        ])
        consumer = try ClientRoundTrip.client(RD_KAFKA_CONSUMER, [
            ("bootstrap.servers", brokers), ("group.id", "dnpipes-bench-\(getpid())"), ("enable.auto.commit", "false"),
            ("fetch.wait.max.ms", "100"), ("enable.partition.eof", "false"),
        ])
        rd_kafka_poll_set_consumer(consumer)
        let list = rd_kafka_topic_partition_list_new(1)!
        rd_kafka_topic_partition_list_add(list, topic, 0).pointee.offset = Int64(RD_KAFKA_OFFSET_BEGINNING)   // a new, empty topic
        rd_kafka_assign(consumer, list)
        rd_kafka_topic_partition_list_destroy(list)
    }

    private static func client(_ type: rd_kafka_type_t, _ settings: [(String, String)]) throws -> OpaquePointer {
        let conf = rd_kafka_conf_new()
        var errstr = [CChar](repeating: 0, count: 512)
        for (k, v) in settings where rd_kafka_conf_set(conf, k, v, &errstr, errstr.count) != RD_KAFKA_CONF_OK {
            throw BenchError("librdkafka \(k)=\(v): \(text(of: errstr))")
        }
        guard let rk = rd_kafka_new(type, conf, &errstr, errstr.count) else { throw BenchError(text(of: errstr)) }
        return rk
    }

    func roundTrip(_ seq: Int) throws -> Double {
        let payload = Array("\(seq)".utf8)
        let start = monotonicNow()
        let err = payload.withUnsafeBytes { dnp_produce(producer, topic, 0, $0.baseAddress, $0.count, nil, nil) }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw BenchError("produce: \(String(cString: rd_kafka_err2str(err)))") }
        let deadline = start + 30
        while monotonicNow() < deadline {
            rd_kafka_poll(producer, 0)
            guard let m = rd_kafka_consumer_poll(consumer, 100) else { continue }
            defer { rd_kafka_message_destroy(m) }
            let msg = m.pointee
            guard msg.err == RD_KAFKA_RESP_ERR_NO_ERROR, let p = msg.payload else { continue }
            if Array(UnsafeRawBufferPointer(start: p, count: msg.len)) == payload { return monotonicNow() - start }
        }
        throw BenchError("message \(seq) did not come back within 30 s")
    }

    func close() {
        rd_kafka_flush(producer, 5000)
        rd_kafka_destroy(producer)
        rd_kafka_consumer_close(consumer)
        rd_kafka_destroy(consumer)
    }
}
