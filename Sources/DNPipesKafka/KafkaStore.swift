import CRdKafka
import Foundation
import Logging
import DNPipesCore

/// Pipes as Kafka topics. One mount holds three librdkafka clients whatever the number of pipes and readers:
/// a producer for pushes (`PipeProducer`), a consumer that fetches every streamed partition into its shared
/// stream (`StreamConsumer`), and an admin client for metadata, topic management, reset records and
/// DeleteRecords (`KafkaAdmin`).
///
/// The store is a facade over parts with one job each: the names as the cluster lists them (`PipeNames`,
/// refreshed in KafkaStore+Metadata.swift), making and deleting topics (KafkaStore+Topics.swift), starting
/// the shared streams (KafkaStore+Streams.swift), resets (KafkaStore+Resets.swift, ResetFloor.swift),
/// retention (KafkaStore+Retention.swift); here, the threads and clients and the order they stop in.
// @unchecked Sendable: the mutable state is in lock boxes; the queues and clients are set in init.
public final class KafkaStore: PipeStore, @unchecked Sendable {
    public let configuration: KafkaConfiguration
    let logger: Logger
    /// Pushes, with the delivery reports that count them off.
    let producer: PipeProducer
    var deliveries: DeliveryTable { producer.deliveries }
    static let markerHeader = "dnpipes-reset"

    let consumer: StreamConsumer
    let admin: KafkaAdmin

    /// The names, and the pipes open on this mount, under one lock: a pipe leaves both at once.
    struct Catalog {
        var names = PipeNames()
        /// The store keeps its open pipes and each keeps the store (which it calls), until shutdown lets go
        /// of them: a pipe a handle still holds after that finds the clients gone, never a freed store.
        var pipes: [PipeName: KafkaPipe] = [:]
    }
    let catalog = LockedValue(Catalog())
    private let running = LockedValue(true)
    /// Set by the first `stopTakingWrites`, left once its wait is over.
    private let writesStopping = LockedValue<DispatchGroup?>(nil)
    private var threads: [Thread] = []
    private let stopped = DispatchGroup()
    /// Ends the metadata thread's wait between refreshes (at shutdown).
    let metadataWake = DispatchSemaphore(value: 0)

    /// Admin requests of resets (DeleteRecords, reset floors), retention changes, and streams gaining partitions.
    let adminQueue = DispatchQueue(label: "dnpipes.kafka.admin")
    /// Where topics are made and deleted, one after another (see `create`, `remove`).
    let topicAdmin = DispatchQueue(label: "dnpipes.kafka.topics")
    /// Where streams are started (see `startStream`).
    let streamStarts = DispatchQueue(label: "dnpipes.kafka.stream-starts")
    /// Whether DeleteRecords worked the last time (nil: not tried yet).
    let deleteRecordsWorks = LockedValue<Bool?>(nil)
    /// Pipes' retentions as last read or set (see KafkaStore+Retention.swift).
    let retentions = LockedValue<[PipeName: Retention]>([:])
    let topicRetentionRefusalLogged = LockedValue(false)
    /// Where retentions are read again (see `refreshRetentions`), off the metadata thread.
    let retentionReads = DispatchQueue(label: "dnpipes.kafka.retention-reads")
    let retentionReadPending = LockedValue(false)
    /// When this mount last committed each pipe's retention (brokers expire a member-less group's offsets).
    let retentionCommits = LockedValue<[PipeName: Date]>([:])

    public init(configuration: KafkaConfiguration, logger: Logger) throws {
        try KafkaHandle.checkVersion()
        self.configuration = configuration
        self.logger = logger
        producer = try PipeProducer(configuration: configuration, logger: logger)
        consumer = try StreamConsumer(configuration: configuration, logger: logger)
        admin = try KafkaAdmin(configuration: configuration)
        logger.info("connecting to Kafka: \(configuration.loggable)")
        if let error = refreshMetadata(timeout: configuration.connectTimeout) {
            closeClients()
            throw PipeError.unavailable("cannot reach the Kafka brokers \(configuration.brokers) within \(Int(configuration.connectTimeout)) s: \(error)")
        }
        start("dnpipes-kafka-producer") { [self] in producer.run(while: { isRunning }) }
        start("dnpipes-kafka-consumer") { [self] in consumer.run(while: { isRunning }) }
        start("dnpipes-kafka-metadata") { [self] in refreshMetadataWhileRunning() }
    }

    var isRunning: Bool { running.withLock { $0 } }

    /// Starts one of the store's threads. Each holds the store until it ends, at shutdown, which waits for
    /// them all.
    private func start(_ name: String, _ body: @escaping @Sendable () -> Void) {
        stopped.enter()
        let t = Thread { [stopped] in body(); stopped.leave() }
        t.name = name
        t.start()
        threads.append(t)
    }

    /// Stops in order: the producer takes no new messages and, while its thread still serves delivery
    /// reports, waits (up to `shutdownTimeout`) for what writers have in flight, then answers every flush
    /// still waiting (EIO for what the brokers did not acknowledge); no new work is taken (`isRunning` is
    /// false, and work queued from now on touches no client), the threads that poll the clients stop, the
    /// work already queued runs out (topics still being made are made, so that every pipe mkfifo reported
    /// exists), and then the clients are let go.
    /// The producer's first shutdown step, taken once; a second caller waits for the first to finish.
    public func stopTakingWrites() {
        let (stopping, first) = writesStopping.withLock { group -> (DispatchGroup, Bool) in
            if let group { return (group, false) }
            let made = DispatchGroup()
            made.enter()
            group = made
            return (made, true)
        }
        guard first else { return stopping.wait() }
        producer.stopTaking(waitingUpTo: configuration.shutdownTimeout)
        stopping.leave()
    }

    public func shutdown() {
        guard isRunning else { return }
        stopTakingWrites()
        let wasRunning = running.withLock { running in defer { running = false }; return running }
        guard wasRunning else { return }
        consumer.wake()
        metadataWake.signal()
        stopped.wait()
        topicAdmin.sync {}
        streamStarts.sync {}
        adminQueue.sync {}
        retentionReads.sync {}
        closeClients()
        let pipes = catalog.withLock { catalog in defer { catalog.pipes = [:] }; return catalog.pipes }
        withExtendedLifetime(pipes) {}
    }

    /// Lets go of the clients: each is destroyed now, or when the last call still using it returns.
    private func closeClients() {
        consumer.close()
        producer.close()
        admin.close()
    }

    // MARK: Names

    func topic(for name: PipeName) -> String { configuration.topicPrefix + name.value }

    func pipeName(forTopic topic: String) -> PipeName? {
        guard topic.hasPrefix(configuration.topicPrefix) else { return nil }
        let rest = String(topic.dropFirst(configuration.topicPrefix.count))
        if KafkaStore.isInternal(topic) || KafkaStore.isInternal(rest) { return nil }
        return try? PipeName(validating: rest)
    }

    /// Kafka names its own topics with two underscores (`__consumer_offsets`, `__transaction_state`); they
    /// are not pipes, so they are neither listed nor made. Other names with an underscore are ordinary topics.
    static func isInternal(_ topic: String) -> Bool { topic.hasPrefix("__") }

    // MARK: PipeStore

    public func list() throws -> [PipeName] {
        catalog.withLock { $0.names.names.sorted() }
    }

    public func contains(_ name: PipeName) -> Bool {
        catalog.withLock { $0.names.contains(name) }
    }

    public func openedLog(_ name: PipeName) -> PipeLog? {
        catalog.withLock { $0.pipes[name] }
    }

    public func open(_ name: PipeName) throws -> PipeLog? {
        catalog.withLock { catalog in
            guard catalog.names.contains(name) else { return nil }
            if let existing = catalog.pipes[name] { return existing }
            // The stream starts with the first reader (synchronize): a mount that only writes a pipe never reads it.
            let pipe = KafkaPipe(name: name, topic: topic(for: name), store: self, windowBytes: configuration.windowBytes)
            catalog.pipes[name] = pipe
            return pipe
        }
    }

    func isOpen(_ name: PipeName) -> Bool {
        catalog.withLock { $0.pipes[name] != nil }
    }

    func isOpen(_ pipe: KafkaPipe) -> Bool {
        catalog.withLock { $0.pipes[pipe.name] === pipe }
    }
}
