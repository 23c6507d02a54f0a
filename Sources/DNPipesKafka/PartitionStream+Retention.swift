import DNPipesCore

/// Retention on Kafka, as readers see it: the brokers may apply a topic's retention.ms late or not at all
/// (the test broker keeps everything), so the stream itself skips messages whose timestamps have expired,
/// as the embedded store does, and every backend behaves the same.
extension PartitionStream {
    /// The first offset not expired among those delivered; offsets not delivered yet count as new. Called
    /// with the lock held.
    func firstKept() -> Int64 {
        ages.retention.seconds == nil ? 0 : ages.firstKept(oldest: resetFloor, end: position, nowMillis: currentMillis())
    }

    /// Notes the time of a delivered message the index has not counted yet (a rewind's refetch changes
    /// nothing). Called with the lock held, before the index counts it.
    func noteAge(offset: Int64, timestamp: Int64) {
        guard let index, offset >= index.next else { return }
        ages.note(offset: offset, millis: timestamp >= 0 ? timestamp : currentMillis(), byte: index.size)
    }

    func setRetention(_ retention: Retention) {
        lock.lock()
        ages.retention = retention
        lock.unlock()
    }

    /// Messages (offsets, where markers count too) and framed bytes from the oldest kept offset to the end.
    func retained() -> (messages: Int64, bytes: Int64, oldest: Int64, end: Int64) {
        let (oldest, end) = bounds()
        lock.lock(); defer { lock.unlock() }
        let size = index?.size ?? 0
        let below = index.map { oldest <= $0.origin ? 0 : ages.byte(at: oldest) ?? 0 } ?? 0
        return (max(0, end - oldest), max(0, size - below), oldest, end)
    }
}
