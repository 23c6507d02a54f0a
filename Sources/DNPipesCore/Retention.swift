import Foundation

/// How long a pipe keeps its messages: older ones are removed for every reader, as a reset removes all of
/// them, but by age.
public struct Retention: Sendable, Equatable, CustomStringConvertible {
    /// Seconds a message is kept after its push; nil keeps messages until a reset or a deletion.
    public let seconds: Int64?

    public static let none = Retention(seconds: nil)

    public init(seconds: Int64?) {
        precondition(seconds.map { $0 > 0 } ?? true, "a retention is positive")
        self.seconds = seconds
    }

    /// Why a retention value was refused.
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// The largest retention: 2^33 seconds (about 270 years), whose milliseconds fit in an Int64 with room to spare.
    public static let maxSeconds: Int64 = 1 << 33

    /// Parses `none` or a positive whole number with a unit: `30s`, `15m`, `12h`, `7d`.
    public init(parsing text: String) throws {
        let value = text.trimmingCharacters(in: CharacterSet.whitespacesAndNewlines.union(CharacterSet(charactersIn: "\0")))
        if value == "none" { self = .none; return }
        guard let unit = value.last, let scale: Int64 = ["s": 1, "m": 60, "h": 3600, "d": 86400][unit],
              let number = Int64(value.dropLast()), number > 0, value.dropLast().allSatisfy(\.isASCIIDigit) else {
            throw Invalid(description: "retention '\(text)' is not 'none' or a positive number with a unit s, m, h or d (e.g. 7d)")
        }
        let (seconds, overflow) = number.multipliedReportingOverflow(by: scale)
        guard !overflow, seconds <= Retention.maxSeconds else {
            throw Invalid(description: "retention '\(text)' is longer than \(Retention.maxSeconds / 86400) days")
        }
        self.init(seconds: seconds)
    }

    /// The shortest exact text for the value, in the largest unit that divides it (`7d`, `90m`, `none`).
    public var description: String {
        guard let seconds else { return "none" }
        for (unit, scale) in [("d", Int64(86400)), ("h", 3600), ("m", 60)] where seconds % scale == 0 {
            return "\(seconds / scale)\(unit)"
        }
        return "\(seconds)s"
    }

    /// Milliseconds since the epoch before which messages are expired at `nowMillis`, or nil for none.
    public func cutoff(nowMillis: Int64) -> Int64? {
        seconds.map { nowMillis - $0 * 1000 }
    }
}

/// A store whose pipes can each keep messages for a limited time (both backends).
public protocol RetentionControl: AnyObject, Sendable {
    /// The pipe's retention as this mount knows it, from memory (a stat or getxattr asks).
    func retention(of name: PipeName) -> Retention
    /// Sets a pipe's retention and makes it durable (for the embedded store a small file beside the pipe's
    /// log, on Kafka the topic's configuration), then calls `completion` on any thread. Messages older than
    /// it are removed for every reader from then on.
    func setRetention(_ retention: Retention, of name: PipeName, completion: @escaping @Sendable (Error?) -> Void)
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

/// Milliseconds since the epoch now (the realtime clock, as message timestamps on Kafka).
public func currentMillis() -> Int64 {
    var t = timespec()
    clock_gettime(CLOCK_REALTIME, &t)
    return Int64(t.tv_sec) * 1000 + Int64(t.tv_nsec) / 1_000_000
}

/// A log that counts exactly what it retains: messages and their framed bytes from its oldest kept offset
/// to its end (a backend without it is described by its bounds and stream size).
public protocol RetainedCounting {
    func retained() -> (messages: Int64, bytes: Int64, oldest: Int64, end: Int64)
}
