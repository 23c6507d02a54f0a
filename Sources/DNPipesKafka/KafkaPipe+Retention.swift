import DNPipesCore

extension KafkaPipe: RetainedCounting {
    /// Applies a retention to every partition's stream; readers parked behind expired messages look again.
    func applyRetention(_ retention: Retention) {
        partitionStreams.forEach { $0.setRetention(retention) }
        notifyReaders()
    }

    /// What the pipe retains, over its partitions: offsets (markers and control records count, as Kafka
    /// numbers them) and framed bytes from each partition's oldest kept offset; the offsets are partition 0's.
    func retained() -> (messages: Int64, bytes: Int64, oldest: Int64, end: Int64) {
        let all = partitionStreams.map { $0.retained() }
        guard let first = all.first else { return (0, 0, 0, 0) }
        return (all.reduce(0) { $0 + $1.messages }, all.reduce(0) { $0 + $1.bytes }, first.oldest, first.end)
    }
}
