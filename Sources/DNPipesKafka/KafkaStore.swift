import CRdKafka
import Foundation
import Logging
import DNPipesCore

/// Pipes as Kafka topics. One mount holds three librdkafka clients whatever the number of pipes and readers:
/// a producer for pushes (`PipeProducer`), a consumer that fetches every streamed partition into its shared
/// stream (`StreamConsumer`), and, here, an admin client for the names, topic management, metadata, reset
/// records and DeleteRecords.
// @unchecked Sendable: every var is guarded by `lock`; the clients are librdkafka handles, thread-safe, set in
// init and destroyed at shutdown after every thread and queue that uses them has stopped.
public final class KafkaStore: PipeStore, @unchecked Sendable {
    public let configuration: KafkaConfiguration
    let logger: Logger
    /// Pushes, with the delivery reports that count them off.
    let producer: PipeProducer
    var deliveries: DeliveryTable { producer.deliveries }
    static let markerHeader = "dnpipes-reset"

    private let consumer: StreamConsumer
    let admin: OpaquePointer

    private let lock = NSLock()
    private var names: Set<PipeName> = []
    private var createdAt: [PipeName: Date] = [:]
    /// When a lookup on the brokers last went unanswered (see `lookUp`).
    private var lookupsUnansweredAt: DispatchTime?
    /// Pipes whose topic is being made on the brokers (see `create`).
    private var creating: Set<PipeName> = []
    /// Pipes removed here whose topics are being deleted (no date yet) or were deleted at the date: until the
    /// brokers' listings stop showing them (at most 10 s), a listing that still has them does not bring
    /// them back.
    private var deleting: [PipeName: Date?] = [:]
    private var pipes: [PipeName: KafkaPipe] = [:]
    /// Partition counts from the latest metadata, by topic.
    private var partitionCounts: [String: Int] = [:]
    private var running = true
    private var deleteRecordsWorks: Bool?
    private var threads: [Thread] = []
    private let stopped = DispatchGroup()
    let adminQueue = DispatchQueue(label: "dnpipes.kafka.admin")
    /// Ends the metadata thread's wait between refreshes (at shutdown).
    private let metadataWake = DispatchSemaphore(value: 0)
    /// Where topics are made, one after another (see `create`).
    private let topicAdmin = DispatchQueue(label: "dnpipes.kafka.topics")
    /// Where streams are started (see `startStream`).
    private let streamStarts = DispatchQueue(label: "dnpipes.kafka.stream-starts")
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
        // Looking up a name must never create a topic of that name, whatever the brokers' auto-creation says.
        admin = try KafkaHandle.make(RD_KAFKA_PRODUCER, defaults: [("client.id", "dnpipes-admin"), ("allow.auto.create.topics", "false")],
                                     configuration: configuration)
        logger.info("connecting to Kafka: \(configuration.loggable)")
        if let error = refreshMetadata(timeout: configuration.connectTimeout) {
            shutdownClients()
            throw PipeError.unavailable("cannot reach the Kafka brokers \(configuration.brokers) within \(Int(configuration.connectTimeout)) s: \(error)")
        }
        start("dnpipes-kafka-producer") { [unowned self] in producer.run(while: { isRunning }) }
        start("dnpipes-kafka-consumer") { [unowned self] in consumer.run(while: { isRunning }) }
        start("dnpipes-kafka-metadata") { [unowned self] in
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
    }

    var isRunning: Bool {
        lock.lock(); defer { lock.unlock() }
        return running
    }

    private func start(_ name: String, _ body: @escaping @Sendable () -> Void) {
        stopped.enter()
        let t = Thread { [stopped] in body(); stopped.leave() }
        t.name = name
        t.start()
        threads.append(t)
    }

    // MARK: Names

    private func topic(for name: PipeName) -> String { configuration.topicPrefix + name.value }

    private func pipeName(forTopic topic: String) -> PipeName? {
        guard topic.hasPrefix(configuration.topicPrefix) else { return nil }
        let rest = String(topic.dropFirst(configuration.topicPrefix.count))
        if KafkaStore.isInternal(topic) || KafkaStore.isInternal(rest) { return nil }
        return try? PipeName(validating: rest)
    }

    /// Kafka names its own topics with two underscores (`__consumer_offsets`, `__transaction_state`); they
    /// are not pipes, so they are neither listed nor made. Other names with an underscore are ordinary topics.
    static func isInternal(_ topic: String) -> Bool { topic.hasPrefix("__") }

    /// Reads the cluster's topics; returns an error text, or nil on success.
    private func refreshMetadata(timeout: Double) -> String? {
        var md: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(admin, 1, nil, &md, Int32(timeout * 1000))
        KafkaMetrics.brokersAnswered(err == RD_KAFKA_RESP_ERR_NO_ERROR)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let md else { return KafkaHandle.describe(err) }
        defer { rd_kafka_metadata_destroy(md) }
        var seen: Set<PipeName> = []
        var counts: [String: Int] = [:]
        for i in 0..<Int(md.pointee.topic_cnt) {
            let t = md.pointee.topics[i]
            guard t.err == RD_KAFKA_RESP_ERR_NO_ERROR, let name = pipeName(forTopic: String(cString: t.topic)) else { continue }
            seen.insert(name)
            counts[String(cString: t.topic)] = Int(t.partition_cnt)
        }
        lock.lock()
        partitionCounts = counts
        let streamed = Array(pipes.values)
        let now = Date()
        // A pipe created here moments ago may not be in every broker's metadata yet. Once a listing has it,
        // it has no such grace any more: a later listing without it means it was deleted.
        for name in seen { createdAt[name] = nil }
        createdAt = createdAt.filter { now.timeIntervalSince($0.value) < 10 }
        // Deleted here: left out while the brokers still list the topic (briefly), forgotten once they do not.
        deleting = deleting.filter { name, deletedAt in
            guard let deletedAt else { return true }   // still being deleted
            return seen.contains(name) && now.timeIntervalSince(deletedAt) < 10
        }
        seen.subtract(deleting.keys)
        let graced = createdAt
        lock.unlock()
        // A pipe within its grace that a reader has open: after a couple of seconds, ask about its topic
        // alone, so that a deletion on another host ends that reader now rather than when the grace ends.
        for (name, at) in graced {
            if now.timeIntervalSince(at) >= 2, isOpen(name), topicExists(topic(for: name)) == false { continue }
            seen.insert(name)
        }
        lock.lock()
        // Made here while the lock was let go, or still being made on the brokers however long that takes.
        for name in createdAt.keys where graced[name] == nil { seen.insert(name) }
        seen.formUnion(creating)
        let gone = pipes.filter { !seen.contains($0.key) }.map(\.value)
        names = seen
        for p in gone { pipes[p.name] = nil }
        lock.unlock()
        for p in gone {
            logger.info("pipe \(p.name) was deleted on the cluster")
            p.markRemoved()
            consumer.unassign(p)
        }
        // A topic that gained partitions: stream the new ones too.
        for p in streamed where !gone.contains(where: { $0 === p }) {
            if let count = counts[p.topic], p.isStreaming, count > p.partitionCount {
                adminQueue.async { [self] in if isRunning { extendStream(p, to: count) } }
            }
        }
        return nil
    }

    // MARK: PipeStore

    public func list() throws -> [PipeName] {
        lock.lock(); defer { lock.unlock() }
        return names.sorted()
    }

    private func isBeingCreated(_ name: PipeName) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return creating.contains(name)
    }

    public func contains(_ name: PipeName) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return names.contains(name)
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
        lock.lock()
        let quiet = lookupsUnansweredAt.map { DispatchTime.now() < $0 + 2 } ?? false
        let beingDeleted = deleting[name] != nil
        lock.unlock()
        if quiet || beingDeleted { return false }
        switch topicExists(topicName) {
        case true?: break
        case false?: return false
        case nil:
            lock.lock(); lookupsUnansweredAt = .now(); lock.unlock()
            return false
        }
        lock.lock()
        names.insert(name)
        createdAt[name] = Date()   // until every broker's metadata lists it
        lock.unlock()
        return true
    }

    /// Asks the brokers about one topic: whether it exists, or nil when they did not answer.
    private func topicExists(_ topicName: String) -> Bool? {
        guard let handle = rd_kafka_topic_new(admin, topicName, nil) else { return nil }
        defer { rd_kafka_topic_destroy(handle) }
        var md: UnsafePointer<rd_kafka_metadata>?
        guard rd_kafka_metadata(admin, 0, handle, &md, 1000) == RD_KAFKA_RESP_ERR_NO_ERROR, let md else { return nil }
        defer { rd_kafka_metadata_destroy(md) }
        guard md.pointee.topic_cnt > 0 else { return nil }
        let t = md.pointee.topics[0]
        if t.err == RD_KAFKA_RESP_ERR_NO_ERROR {
            lock.lock()
            partitionCounts[topicName] = Int(t.partition_cnt)
            lock.unlock()
            return t.partition_cnt > 0
        }
        return t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_ID ? false : nil
    }

    private func isOpen(_ name: PipeName) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return pipes[name] != nil
    }

    /// Creates a pipe: its name is valid and reserved here at once, and the topic is made on the brokers
    /// in the background, in order with other creations. So `mkfifo` returns without waiting for the
    /// brokers: while it waits the kernel holds the directory's lock, and with the brokers slow or away a
    /// few creations would stall every `ls` and every lookup of a new name in the mount. Writes to the pipe
    /// meanwhile wait in the producer's queue, and a close waits for them to be delivered, as always. If the
    /// brokers refuse the topic, the log says why, the pipe goes away, and its writers' closes fail.
    @discardableResult
    public func create(_ name: PipeName) throws -> Bool {
        if KafkaStore.isInternal(name.value) || KafkaStore.isInternal(topic(for: name)) {
            throw PipeError.invalidName("\(name): names starting with __ are Kafka's internal topics")
        }
        if topic(for: name).utf8.count > PipeName.maxLength {
            throw PipeError.invalidName("topic \(topic(for: name)) (the pipe name with the topic prefix) exceeds Kafka's \(PipeName.maxLength) characters")
        }
        lock.lock()
        if names.contains(name) { lock.unlock(); return false }
        names.insert(name)
        createdAt[name] = Date()   // until every broker's metadata lists it
        creating.insert(name)
        deleting[name] = nil
        lock.unlock()
        topicAdmin.async { [self] in makeTopic(of: name) }
        return true
    }

    /// Makes a pipe's topic on the brokers (see `create`). Runs on `topicAdmin`.
    private func makeTopic(of name: PipeName) {
        let topicName = topic(for: name)
        var failure: String?
        do {
            var err = try createTopic(topicName, replication: -1)
            if err == RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR || err == RD_KAFKA_RESP_ERR_INVALID_REQUEST
                || err == RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION {
                // Brokers before KIP-464 need an explicit replication factor.
                err = try createTopic(topicName, replication: 1)
            }
            switch err {
            case RD_KAFKA_RESP_ERR_NO_ERROR:
                logger.info("created pipe \(name) (topic \(topicName))")
                if configuration.defaultRetention != .none && !GroupJournal.isJournal(name) {   // journals keep every entry
                    do { try recordRetention(configuration.defaultRetention, of: name) } catch {
                        logger.error("the pipe keeps every message: its retention was not recorded",
                                     metadata: ["pipe": "\(name)", "retention": "\(configuration.defaultRetention)", "error": "\(error)"])
                    }
                }
            case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS: break   // made elsewhere meanwhile: the pipe is there
            default: failure = KafkaHandle.describe(err)
            }
        } catch {
            failure = "\(error)"
        }
        lock.lock()
        creating.remove(name)
        // The grace for metadata that does not list it yet runs from now, however long the making took.
        if failure == nil && names.contains(name) { createdAt[name] = Date() }
        var refused: KafkaPipe?
        if failure != nil {
            names.remove(name)
            createdAt[name] = nil
            refused = pipes.removeValue(forKey: name)
        }
        lock.unlock()
        if let failure {
            logger.error("the brokers did not make the pipe's topic; the pipe is gone",
                         metadata: ["pipe": "\(name)", "topic": "\(topicName)", "error": "\(failure)"])
            refused?.markRemoved()
        }
    }

    private func createTopic(_ topic: String, replication: Int32) throws -> rd_kafka_resp_err_t {
        var errstr = [CChar](repeating: 0, count: 512)
        guard let newTopic = rd_kafka_NewTopic_new(topic, 1, replication, &errstr, errstr.count) else {
            throw PipeError.io("topic \(topic): \(text(of: errstr))")
        }
        defer { rd_kafka_NewTopic_destroy(newTopic) }
        var topics: [OpaquePointer?] = [newTopic]
        return try adminRequest(what: "create topic \(topic)") { options, queue in
            rd_kafka_CreateTopics(admin, &topics, 1, options, queue)
        } result: { event in
            let result = rd_kafka_event_CreateTopics_result(event)
            var count = 0
            guard let list = rd_kafka_CreateTopics_result_topics(result, &count), count > 0 else { return RD_KAFKA_RESP_ERR_UNKNOWN }
            return rd_kafka_topic_result_error(list[0])
        }
    }

    /// Removes a pipe: it is gone here at once (its readers reach end-of-file, listings leave it out), and
    /// its topic is deleted on the brokers in the background, in order with creations, as `create` makes
    /// topics: the kernel holds the directory's lock while an unlink is out, and with the brokers slow or away
    /// a wait here would stall every `ls` of the mount. If the brokers refuse the deletion, the log says why
    /// and the pipe comes back with the next listing.
    public func remove(_ name: PipeName) throws {
        guard contains(name) else { throw PipeError.noSuchPipe(name) }
        lock.lock()
        names.remove(name)
        createdAt[name] = nil
        deleting[name] = .some(nil)
        let pipe = pipes.removeValue(forKey: name)
        lock.unlock()
        if let pipe {
            pipe.markRemoved()
            consumer.unassign(pipe)
        }
        topicAdmin.async { [self] in deleteTopic(of: name) }
        logger.info("deleted pipe \(name)")
    }

    /// Deletes a removed pipe's topic (see `remove`). Runs on `topicAdmin`.
    private func deleteTopic(of name: PipeName) {
        let topicName = topic(for: name)
        var failure: String?
        do {
            guard let deleteTopic = rd_kafka_DeleteTopic_new(topicName) else { throw PipeError.io("topic \(topicName)") }
            defer { rd_kafka_DeleteTopic_destroy(deleteTopic) }
            var topics: [OpaquePointer?] = [deleteTopic]
            let err = try adminRequest(what: "delete topic \(topicName)") { options, queue in
                rd_kafka_DeleteTopics(admin, &topics, 1, options, queue)
            } result: { event in
                let result = rd_kafka_event_DeleteTopics_result(event)
                var count = 0
                guard let list = rd_kafka_DeleteTopics_result_topics(result, &count), count > 0 else { return RD_KAFKA_RESP_ERR_UNKNOWN }
                return rd_kafka_topic_result_error(list[0])
            }
            if err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART { failure = KafkaHandle.describe(err) }
        } catch {
            failure = "\(error)"
        }
        lock.lock()
        // Made again meanwhile: that creation (queued after this deletion) owns the name now.
        let current = deleting[name] != nil
        if current { deleting[name] = failure == nil ? .some(Date()) : nil }
        lock.unlock()
        if let failure, current {
            logger.error("the brokers did not delete the pipe's topic; it comes back with the next listing",
                         metadata: ["pipe": "\(name)", "topic": "\(topicName)", "error": "\(failure)"])
        }
    }

    public func openedLog(_ name: PipeName) -> PipeLog? {
        lock.lock(); defer { lock.unlock() }
        return pipes[name]
    }

    public func open(_ name: PipeName) throws -> PipeLog? {
        guard contains(name) else { return nil }
        lock.lock()
        defer { lock.unlock() }
        if let existing = pipes[name] { return existing }
        // The stream starts with the first reader (synchronize): a mount that only writes a pipe never reads it.
        let pipe = KafkaPipe(name: name, topic: topic(for: name), store: self, windowBytes: configuration.windowBytes)
        pipes[name] = pipe
        return pipe
    }

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

    /// Streams the partitions a topic gained since its stream started.
    private func extendStream(_ pipe: KafkaPipe, to count: Int) {
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
        lock.lock(); defer { lock.unlock() }
        return pipes.values.filter { $0.isStreaming }.map(\.name)
    }

    private func isOpen(_ pipe: KafkaPipe) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return pipes[pipe.name] === pipe
    }

    /// The topic's partition count as the latest metadata gave it (1 when unknown).
    func knownPartitionCount(of topic: String) -> Int {
        lock.lock(); defer { lock.unlock() }
        return max(1, partitionCounts[topic] ?? 1)
    }

    public func shutdown() {
        producer.flush(timeoutMs: 10_000)
        lock.lock()
        let wasRunning = running
        running = false
        lock.unlock()
        guard wasRunning else { return }
        // In order: the threads that poll the clients stop, the work already queued runs out (topics still
        // being made are made, so that every pipe mkfifo reported exists), then the clients go. Work queued
        // after that (a stream start's retry, a reset's DeleteRecords, a timer asking for watermarks) sees
        // isRunning false and touches no client.
        consumer.wake()
        metadataWake.signal()
        stopped.wait()
        topicAdmin.sync {}
        streamStarts.sync {}
        adminQueue.sync {}
        retentionReads.sync {}
        shutdownClients()
    }

    private func shutdownClients() {
        consumer.close()
        producer.close()
        rd_kafka_destroy(admin)
    }

    // MARK: Resets

    func produceMarker(for pipe: KafkaPipe, partition: Int32, completion: @escaping (Result<Int64, Error>) -> Void) {
        let token = deliveries.registerOneOff(OneDelivery { [logger] err, offset in
            if err == RD_KAFKA_RESP_ERR_NO_ERROR {
                completion(.success(offset))
            } else {
                logger.error("pipe \(pipe.name): reset marker for partition \(partition) not acknowledged: \(KafkaHandle.describe(err))")
                completion(.failure(PipeError.unavailable(KafkaHandle.describe(err))))
            }
        })
        let err = producer.produce(topic: pipe.topic, partition: partition, payload: [], token: token, marker: true)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            _ = deliveries.target(token)
            completion(.failure(PipeError.unavailable("pipe \(pipe.name): reset refused: \(KafkaHandle.describe(err))")))
        }
    }

    /// Frees the broker's storage below a reset marker, where the broker supports DeleteRecords.
    func deleteRecords(of pipe: KafkaPipe, below floors: [Int64]) {
        lock.lock()
        let skip = configuration.deleteRecords == .off || (configuration.deleteRecords == .auto && deleteRecordsWorks == false)
        lock.unlock()
        if skip { return }
        adminQueue.async { [self] in
            guard isRunning else { return }
            let list = partitionList(pipe.topic, offsets: floors)
            defer { rd_kafka_topic_partition_list_destroy(list) }
            guard let request = rd_kafka_DeleteRecords_new(list) else { return }
            defer { rd_kafka_DeleteRecords_destroy(request) }
            var requests: [OpaquePointer?] = [request]
            let err = (try? adminRequest(what: "delete records of \(pipe.topic)", timeout: 10) { options, queue in
                rd_kafka_DeleteRecords(admin, &requests, 1, options, queue)
            } result: { event in
                let result = rd_kafka_event_DeleteRecords_result(event)
                guard let offsets = rd_kafka_DeleteRecords_result_offsets(result), offsets.pointee.cnt > 0 else {
                    return RD_KAFKA_RESP_ERR_UNKNOWN
                }
                let errors = (0..<Int(offsets.pointee.cnt)).map { offsets.pointee.elems[$0].err }
                return errors.first { $0 != RD_KAFKA_RESP_ERR_NO_ERROR } ?? RD_KAFKA_RESP_ERR_NO_ERROR
            }) ?? RD_KAFKA_RESP_ERR__TIMED_OUT
            lock.lock()
            let firstVerdict = deleteRecordsWorks == nil
            deleteRecordsWorks = err == RD_KAFKA_RESP_ERR_NO_ERROR
            lock.unlock()
            if err == RD_KAFKA_RESP_ERR_NO_ERROR {
                if firstVerdict { logger.info("the brokers support DeleteRecords: resets free their storage") }
            } else {
                logger.warning("DeleteRecords on \(pipe.topic) failed (\(KafkaHandle.describe(err))): reset messages stay on the brokers until retention removes them; readers skip them\(configuration.deleteRecords == .auto ? "; not trying again on this mount" : "")")
            }
        }
    }

    /// Runs one admin request and waits for its result event.
    func adminRequest(what: String, timeout: Double = 15,
                              send: (OpaquePointer?, OpaquePointer?) -> Void,
                              result: (OpaquePointer?) -> rd_kafka_resp_err_t) throws -> rd_kafka_resp_err_t {
        let queue = rd_kafka_queue_new(admin)
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(admin, RD_KAFKA_ADMIN_OP_ANY)
        defer { rd_kafka_AdminOptions_destroy(options) }
        var errstr = [CChar](repeating: 0, count: 256)
        rd_kafka_AdminOptions_set_request_timeout(options, Int32(timeout * 1000), &errstr, errstr.count)
        send(options, queue)
        guard let event = rd_kafka_queue_poll(queue, Int32(timeout * 1000) + 1000) else {
            throw PipeError.unavailable("\(what): no answer from the Kafka brokers \(configuration.brokers)")
        }
        defer { rd_kafka_event_destroy(event) }
        let err = rd_kafka_event_error(event)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { return err }
        return result(event)
    }

    // MARK: Consuming

    /// Long enough for a fetch response newer than now to arrive (twice fetch.wait.max.ms).
    let freshFetchInterval = 0.2

    func cachedHighWatermark(of topic: String, partition: Int32) -> Int64? {
        lock.lock(); defer { lock.unlock() }
        // Under the lock, which shutdown takes to stop: the consumer is not destroyed while this runs.
        return running ? consumer.cachedHighWatermark(of: topic, partition: partition) : nil
    }

    func wakeConsumer() { consumer.wake() }

    /// A list of one topic's partitions 0..<offsets.count at those offsets.
    func partitionList(_ topic: String, offsets: [Int64]) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
        KafkaHandle.partitionList(offsets.enumerated().map { (topic, Int32($0.offset), $0.element) })
    }
}
