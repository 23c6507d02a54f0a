import Foundation

/// One measurement of dnpipes next to its peer, from the same run.
struct Comparison: Codable {
    var name: String
    var peerName: String
    var unit: String
    /// Medians (throughput rows: lines per second; latency rows: milliseconds).
    var dnpipes: Double
    var peer: Double
    /// How dnpipes compares: for throughput dnpipes/peer (higher is better), for latency dnpipes/peer (lower
    /// is better).
    var ratio: Double
    var target: String?
    var pass: Bool?
    var dnpipesSamples: [Double]
    var peerSamples: [Double]
}

/// One fan-out run: N readers of one pipe on one mount.
struct FanOutRow: Codable {
    var readers: Int
    var messagesPerSecond: Double
    var residentKiB: Int
    var residentPerExtraReaderKiB: Double?
    var threads: Int
    var brokerConnections: Int
}

struct Report: Codable {
    var machine: [String: String]
    var settings: [String: String]
    var comparisons: [Comparison]
    var fanOut: [FanOutRow]
    var fanOutChecks: [String: Bool]
}

func median(_ xs: [Double]) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func percentile(_ xs: [Double], _ p: Double) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    let rank = Int((p / 100 * Double(s.count)).rounded(.up)) - 1
    return s[min(max(rank, 0), s.count - 1)]
}

/// A throughput comparison from per-round times of the same amount of work.
func throughput(_ name: String, peer peerName: String, lines: Int, dnpipes: [Double], peer: [Double],
                atLeast target: Double?) -> Comparison {
    let a = Double(lines) / median(dnpipes), b = Double(lines) / median(peer)
    let ratio = a / b
    return Comparison(name: name, peerName: peerName, unit: "lines/s", dnpipes: a, peer: b, ratio: ratio,
                      target: target.map { String(format: ">= %gx", $0) }, pass: target.map { ratio >= $0 },
                      dnpipesSamples: dnpipes, peerSamples: peer)
}

func formatTable(_ report: Report) -> String {
    var out = ""
    func pad(_ s: String, _ n: Int, right: Bool = false) -> String {
        s.count >= n ? s : (right ? String(repeating: " ", count: n - s.count) + s : s + String(repeating: " ", count: n - s.count))
    }
    func number(_ x: Double, _ unit: String) -> String {
        switch unit {
        case "ms": return String(format: "%.2f ms", x)
        case "KiB": return String(format: "%.1f KiB", x)
        case "descriptors": return String(format: "%.0f fds", x)
        default: return x >= 1e6 ? String(format: "%.2f M/s", x / 1e6) : String(format: "%.0f k/s", x / 1e3)
        }
    }
    out += pad("measurement", 30) + pad("dnpipes", 13, right: true) + pad("peer", 13, right: true) + "  "
        + pad("ratio", 7, right: true) + "  " + pad("target", 9) + "  result  peer\n"
    for c in report.comparisons {
        let result = c.pass.map { $0 ? "pass" : "FAIL" } ?? "-"
        out += pad(c.name, 30) + pad(number(c.dnpipes, c.unit), 13, right: true) + pad(number(c.peer, c.unit), 13, right: true)
            + "  " + pad(String(format: "%.2fx", c.ratio), 7, right: true) + "  " + pad(c.target ?? "", 9) + "  "
            + pad(result, 6) + "  " + c.peerName + "\n"
    }
    if !report.fanOut.isEmpty {
        out += "\nfan-out: readers of one pipe on one mount (daemon figures are peaks while all readers are open)\n"
        out += pad("readers", 8) + pad("messages/s", 14, right: true) + pad("RSS", 11, right: true)
            + pad("per extra reader", 18, right: true) + pad("threads", 9, right: true) + pad("broker conns", 14, right: true) + "\n"
        for r in report.fanOut {
            out += pad(String(r.readers), 8) + pad(number(r.messagesPerSecond, "/s"), 14, right: true)
                + pad(String(format: "%.1f MiB", Double(r.residentKiB) / 1024), 11, right: true)
                + pad(r.residentPerExtraReaderKiB.map { String(format: "%.0f KiB", $0) } ?? "-", 18, right: true)
                + pad(String(r.threads), 9, right: true) + pad(String(r.brokerConnections), 14, right: true) + "\n"
        }
        for (check, ok) in report.fanOutChecks.sorted(by: { $0.key < $1.key }) {
            out += "  \(ok ? "pass" : "FAIL")  \(check)\n"
        }
    }
    return out
}
