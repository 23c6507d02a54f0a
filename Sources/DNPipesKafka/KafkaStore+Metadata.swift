import Foundation
import DNPipesCore

/// The cluster's topics as the pipes' names: listed every two seconds by the metadata thread, looked up one at a
/// time for a name the listing does not have yet (see `PipeNames` for what a listing changes).
extension KafkaStore {
    /// The metadata thread: a listing every two seconds until shutdown, and every tenth second round a read of
    /// the streamed pipes' retentions.
    func refreshMetadataWhileRunning() {
        var rounds = 0
        // Rounds in a row the brokers did not answer: the first and then one a minute are logged, and
        // the round they answer again.
        var unanswered = 0
        while isRunning {
            rounds += 1
            if rounds % 5 == 0 { scheduleRetentionRefresh() }
            // Every two seconds; shutdown signals the semaphore to end the wait at once.
            _ = metadataWake.wait(timeout: .now() + 2)
            guard isRunning else { break }
            if let error = refreshMetadata(timeout: 5) {
                if unanswered % 30 == 0 {
                    logger.warning("Kafka metadata refresh failed",
                                   metadata: ["broker": "\(configuration.brokers)", "op": "metadata", "error": "\(error)",
                                              "failures": "\(unanswered + 1)"])
                }
                unanswered += 1
            } else if unanswered > 0 {
                logger.notice("Kafka brokers answer again", metadata: ["broker": "\(configuration.brokers)", "op": "metadata",
                                                                     "after_failures": "\(unanswered)"])
                unanswered = 0
            }
        }
    }

    /// Reads the cluster's topics; returns an error text, or nil on success.
    func refreshMetadata(timeout: Double) -> String? {
        let all: [String: Int]
        switch admin.listTopics(timeout: timeout) {
        case .failure(let failure):
            KafkaMetrics.brokersAnswered(false)
            return failure.description
        case .success(let listing):
            KafkaMetrics.brokersAnswered(true)
            all = listing
        }
        // The pipes among the cluster's topics, named before the lock is taken: with thousands of topics this
        // is the part of a refresh that grows with the cluster.
        var topics: [String: Int] = [:]
        var listed: Set<PipeName> = []
        for (topic, partitions) in all {
            guard let name = pipeName(forTopic: topic) else { continue }
            topics[topic] = partitions
            listed.insert(name)
        }
        let now = Date()
        let (first, graced, streamed) = catalog.withLock { catalog in
            let (seen, graced) = catalog.names.beginListing(listed, partitionCounts: topics, now: now)
            return (seen, graced, Array(catalog.pipes.values))
        }
        var seen = first
        // A pipe within its grace that a reader has open: after a couple of seconds, ask about its topic
        // alone, so that a deletion on another host ends that reader now rather than when the grace ends.
        for (name, at) in graced {
            if PipeNames.mayRecheck(createdAt: at, now: now), isOpen(name), topicExists(topic(for: name)) == false { continue }
            seen.insert(name)
        }
        let gone = catalog.withLock { catalog -> [KafkaPipe] in
            let names = catalog.names.finishListing(seen, graced: graced)
            let gone = catalog.pipes.filter { !names.contains($0.key) }.map(\.value)
            for p in gone { catalog.pipes[p.name] = nil }
            return gone
        }
        for p in gone {
            logger.info("pipe \(p.name) was deleted on the cluster")
            p.markRemoved()
            consumer.unassign(p)
        }
        // A topic that gained partitions: stream the new ones too.
        for p in streamed where !gone.contains(where: { $0 === p }) {
            if let count = topics[p.topic], p.isStreaming, count > p.partitionCount {
                adminQueue.async { [self] in if isRunning { extendStream(p, to: count) } }
            }
        }
        return nil
    }

    /// Asks the brokers about one topic when the cached names do not have it.
    ///
    /// Every create of a new name looks it up first, with the directory's lock held by the kernel: when the
    /// brokers leave a lookup unanswered (1 s), the names it would ask about are answered from the cache for
    /// the next two seconds, so that an outage costs one such wait, not one per name.
    public func lookUp(_ name: PipeName) -> Bool {
        if contains(name) { return true }
        let topicName = topic(for: name)
        guard pipeName(forTopic: topicName) == name else { return false }   // internal topics stay hidden
        guard topicName.utf8.count <= PipeName.maxLength else { return false }
        guard catalog.withLock({ $0.names.mayAsk(about: name, now: .now()) }) else { return false }
        switch topicExists(topicName) {
        case true?: break
        case false?: return false
        case nil:
            catalog.withLock { $0.names.lookupUnanswered(at: .now()) }
            return false
        }
        catalog.withLock { $0.names.found(name, now: Date()) }   // graced until every broker's metadata lists it
        return true
    }

    /// Asks the brokers about one topic: whether it exists, or nil when they did not answer.
    func topicExists(_ topicName: String) -> Bool? {
        switch admin.describe(topicName) {
        case .exists(let partitions):
            catalog.withLock { $0.names.notePartitions(partitions, of: topicName) }
            return partitions > 0
        case .absent: return false
        case .unanswered: return nil
        }
    }

    /// The topic's partition count as the latest metadata gave it (1 when unknown).
    func knownPartitionCount(of topic: String) -> Int {
        catalog.withLock { $0.names.partitionCount(of: topic) }
    }
}
