/// One reader of a pipe: its cursor over every partition and, for a reader that stops at the end (a `.drain`
/// view, `pull --exit-at-end`), where that end was when it started. The filesystem and the pull command read
/// through this, so both give the same bytes.
public struct PipeReader: Sendable {
    public enum Start: Sendable { case oldest, end }
    public enum Outcome: Equatable, Sendable { case data([UInt8]), endOfFile, nothing }

    public let log: PipeLog
    private var cursor: ReadCursor
    /// Per partition: the end when the reader started, for a reader that stops there.
    private let stopAt: [Int64]?

    public init(log: PipeLog, start: Start, stopAtEnd: Bool) {
        self.log = log
        let bounds = (0..<max(1, log.partitionCount)).map { log.bounds(partition: $0) }
        cursor = ReadCursor(offsets: bounds.map { start == .end ? $0.end : $0.oldest })
        stopAt = stopAtEnd ? bounds.map(\.end) : nil
    }

    /// Where the reader stands in the first partition.
    public var offset: Int64 { cursor.offset }
    public var offsets: [Int64] { cursor.offsets }
    public var partitionCount: Int { cursor.partitionCount }

    /// Places the reader of a pipe of one partition at `offset`, `skip` bytes into the stream from there.
    public mutating func seek(to offset: Int64, skip: Int64 = 0) {
        cursor.seek(to: offset, skip: skip)
    }

    /// Takes what the reader can have now, up to `capacity` bytes: data, the end of the pipe (it was deleted,
    /// or a stopping reader passed its end), or nothing yet.
    public mutating func read(capacity: Int) throws -> Outcome {
        followNewPartitions()
        var removed = false
        let log = self.log, stopAt = self.stopAt
        let bytes = try cursor.fill(capacity: capacity) { partition, from, maxBytes in
            let limit = PipeReader.limit(of: partition, stopAt)
            if let limit, from >= limit { return nil }
            switch try log.fetch(partition: partition, from: from, maxBytes: maxBytes) {
            case .messages(var batch):
                if let limit { batch.truncate(below: limit) }
                return batch.isEmpty ? nil : batch
            case .nothing: return nil
            case .removed: removed = true; return nil
            }
        }
        if !bytes.isEmpty { return .data(bytes) }
        if removed || passedStop() { return .endOfFile }
        return .nothing
    }

    /// Whether a read would return at once (for poll). Asks the store rather than comparing offsets: a
    /// backend may know of a message (Kafka acknowledged it) before it can serve it.
    public func isReadable() -> Bool {
        if cursor.hasCarry || passedStop() { return true }
        for partition in 0..<cursor.partitionCount {
            let limit = PipeReader.limit(of: partition, stopAt)
            switch log.readiness(partition: partition, from: cursor.offsets[partition]) {
            case .message(let at): if limit.map({ at < $0 }) ?? true { return true }
            case .removed: return true
            case .nothing: continue
            }
        }
        return false
    }

    /// A partition added after a stopping reader started has nothing before that reader's end.
    private static func limit(of partition: Int, _ stopAt: [Int64]?) -> Int64? {
        guard let stopAt else { return nil }
        return partition < stopAt.count ? stopAt[partition] : Int64.min
    }

    /// Whether a stopping reader has had everything up to its end, in every partition.
    private func passedStop() -> Bool {
        guard let stopAt, !cursor.hasCarry else { return false }
        for (partition, stop) in stopAt.enumerated() {
            let at = max(cursor.offsets[partition], log.bounds(partition: partition).oldest)
            if at < stop { return false }
        }
        return true
    }

    /// A topic can gain partitions: read the new ones from their oldest message.
    private mutating func followNewPartitions() {
        let count = log.partitionCount
        while cursor.partitionCount < count {
            cursor.addPartition(at: log.bounds(partition: cursor.partitionCount).oldest)
        }
    }
}
