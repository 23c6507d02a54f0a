import Foundation
import DNPipesCore

/// Starting the shared streams: each pipe's partitions are streamed by the one consumer (`StreamConsumer`)
/// into the pipe's `PartitionStream`s, each from where the partition's last reset left it.
extension KafkaStore {
    /// Starts reading a pipe into its shared streams, one per partition, each where its last reset left it.
    /// Waits on the network (not on a FUSE thread): retries until the brokers answer, the pipe is deleted, or
    /// the mount stops.
    ///
    /// Runs on its own serial queue, so that while the brokers are away the tries hold one thread, not one
    /// per pipe; between tries it holds none. `then` runs once the stream started (or will not).
    func startStream(_ pipe: KafkaPipe, warned: Bool = false, then: @escaping @Sendable () -> Void) {
        streamStarts.async { [self] in
            guard isRunning && !pipe.isRemoved else { return then() }
            do {
                let count = consumer.learnLeaders(of: pipe.topic) ?? knownPartitionCount(of: pipe.topic)
                try streamPartitions(of: pipe, count: count)
                then()
            } catch {
                if !warned { logger.warning("pipe \(pipe.name): cannot start reading yet, retrying: \(error)") }
                streamStarts.asyncAfter(deadline: .now() + 0.5) { [self] in startStream(pipe, warned: true, then: then) }
            }
        }
    }

    /// Streams the partitions a topic gained since its stream started (on the admin queue).
    func extendStream(_ pipe: KafkaPipe, to count: Int) {
        guard count > pipe.partitionCount, !pipe.isRemoved else { return }
        do {
            _ = consumer.learnLeaders(of: pipe.topic)
            try streamPartitions(of: pipe, count: count)
            logger.info("pipe \(pipe.name): topic \(pipe.topic) has \(count) partitions now; reading them all")
            pipe.notifyReaders()
        } catch {
            logger.warning("pipe \(pipe.name): cannot read the partitions its topic gained yet: \(error)")
        }
    }

    /// Starts the pipe's streams of the partitions not streamed yet, each at its reset floor, and has the
    /// consumer fetch them (unless the pipe was deleted meanwhile).
    private func streamPartitions(of pipe: KafkaPipe, count: Int) throws {
        let fresh = pipe.start(floors: try resetFloors(of: pipe.topic, partitions: count))
        try loadRetention(of: pipe)
        if isOpen(pipe) { consumer.assign(pipe, streams: fresh) }
    }

    /// The pipes whose streams run on this mount.
    var streamedPipes: [PipeName] {
        catalog.withLock { $0.pipes.values.filter { $0.isStreaming }.map(\.name) }
    }

    /// Long enough for a fetch response newer than now to arrive (twice fetch.wait.max.ms).
    var freshFetchInterval: Double { 0.2 }

    /// The high watermark of the consumer's latest fetch response for a partition (nil once the consumer is
    /// gone, at shutdown).
    func cachedHighWatermark(of topic: String, partition: Int32) -> Int64? {
        consumer.cachedHighWatermark(of: topic, partition: partition)
    }

    func wakeConsumer() { consumer.wake() }
}
