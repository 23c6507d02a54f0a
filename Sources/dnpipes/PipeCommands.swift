import ArgumentParser
import Dispatch
import Foundation
import Logging
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// Where the commands below find pipes: a Kafka cluster (hosts without FUSE take part this way), or an
/// embedded data directory that no daemon is serving.
struct BackendOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Kafka bootstrap brokers.", valueName: "host:port,..."))
    var brokers: String?

    @Option(help: ArgumentHelp("Prefix of the pipes' Kafka topics (as given to the mount).", valueName: "prefix"))
    var topicPrefix: String = ""

    @Option(help: ArgumentHelp("librdkafka properties file (name=value lines).", valueName: "file"))
    var kafkaConfig: String?

    @Option(name: .customShort("o"), help: ArgumentHelp("Options as for mount: kafka.NAME=VALUE, max_message=BYTES.", valueName: "option,..."))
    var options: [String] = []

    @Option(help: ArgumentHelp("Embedded store directory (when no daemon serves it).", valueName: "dir"))
    var dataDir: String?

    func openStore() throws -> (PipeStore, Int) {
        let parsed: MountOptions
        do { parsed = try MountOptions.parse(options) } catch { throw ValidationError("\(error)") }
        let maxMessageBytes = parsed.maxMessageBytes ?? (1 << 20)
        var logger = makeLogger(level: .warning)
        logger.logLevel = .warning
        let kafka = (brokers ?? parsed.brokers).map {
            KafkaSettings(brokers: $0, topicPrefix: topicPrefix, configFile: kafkaConfig.map(absolute), properties: parsed.kafka)
        }
        let directory = dataDir ?? parsed.dataDirectory
        guard kafka != nil || directory != nil else {
            throw ValidationError("say where the pipes are: --brokers HOST:PORT,... or --data-dir DIR")
        }
        do {
            let store = try makeStore(kafka: kafka, dataDirectory: absolute(directory ?? "."),
                                      maxMessageBytes: maxMessageBytes, logger: logger)
            return (store, maxMessageBytes)
        } catch {
            throw CommandError("\(error)")
        }
    }
}

/// Writes all of `bytes` to standard output; false once it cannot (the reader of the output went away).
func writeToStandardOutput(_ bytes: [UInt8]) -> Bool {
    var written = 0
    while written < bytes.count {
        let n = bytes[written...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; return false }
        written += n
    }
    return true
}

func pipeName(_ raw: String) throws -> PipeName {
    let name: PipeName
    do { name = try PipeName(validating: raw) } catch { throw ValidationError("invalid pipe name '\(raw)': \(error)") }
    if GroupJournal.isJournal(name) {
        throw ValidationError("invalid pipe name '\(raw)': names starting with \(GroupJournal.prefix) are kept for the journals of groups")
    }
    return name
}

struct Push: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Push standard input to a pipe: every line is one message.",
        discussion: "Creates the pipe if needed. Exits 0 once every message is durable (acknowledged by the brokers).")

    @OptionGroup var backend: BackendOptions
    @Argument(help: "The pipe.") var pipe: String

    func run() throws {
        let name = try pipeName(pipe)
        let (store, maxMessageBytes) = try backend.openStore()
        defer { store.shutdown() }
        try store.create(name)
        guard let log = try store.open(name) else { throw CommandError("pipe \(name) vanished") }
        let writer = try log.makeWriter()
        var framer = LineFramer(maxMessageBytes: maxMessageBytes)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = read(0, &buffer, buffer.count)
            if n < 0 { if errno == EINTR { continue }; throw CommandError("reading standard input: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            do {
                let messages = try buffer.withUnsafeBytes { try framer.frame(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                if !messages.isEmpty { try writer.pushWaitingForRoom(messages) }
            } catch {
                throw CommandError("pipe \(name): \(error)")
            }
        }
        if let last = framer.finish() { try writer.pushWaitingForRoom(MessageBlock([last])) }
        if let failure = awaitCompletion(writer.flush) { throw CommandError("pipe \(name): messages not durable: \(failure)") }
    }
}

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pull a pipe's messages to standard output, one per line.",
        discussion: "Starts at the oldest message and waits for more at the end, like cat on a mounted pipe.")

    @OptionGroup var backend: BackendOptions
    @Argument(help: "The pipe.") var pipe: String
    @Flag(help: "Start at the end: only messages pushed from now on (like .tail/PIPE).") var fromEnd = false
    @Flag(help: "Stop at the end as it was when starting (like .drain/PIPE).") var exitAtEnd = false
    @Option(help: ArgumentHelp("Read as a member of this consumer group (like .group/GROUP/PIPE): each message goes to one reader of the group; a line is done once the next one is written, or at exit.", valueName: "group"))
    var group: String?
    @Option(help: ArgumentHelp("With --group: exit after this many messages.", valueName: "n")) var limit: Int?

    func validate() throws {
        if group == nil && limit != nil { throw ValidationError("--limit goes with --group") }
        if group != nil && (fromEnd || exitAtEnd) { throw ValidationError("--group reads what the group has not done: no --from-end or --exit-at-end") }
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
    }

    func run() throws {
        let name = try pipeName(pipe)
        let (store, _) = try backend.openStore()
        defer { store.shutdown() }
        if let group { return try GroupPull(store: store, group: try pipeName(group), pipe: name, limit: limit).run() }
        guard let log = try store.open(name) else { throw CommandError("no pipe named \(name)") }
        log.synchronizeAndWait()
        let wake = DispatchSemaphore(value: 0)
        let token = log.addObserver { wake.signal() }
        defer { log.removeObserver(token) }
        var reader = PipeReader(log: log, start: fromEnd ? .end : .oldest, stopAtEnd: exitAtEnd)
        signal(SIGPIPE, SIG_IGN)
        while true {
            switch try reader.read(capacity: 1 << 20) {
            case .data(let bytes):
                guard writeToStandardOutput(bytes) else { return }   // reader of our output went away
                continue
            case .endOfFile: return
            case .nothing: break
            }
            _ = wake.wait(timeout: .now() + 1)
        }
    }
}

struct Reset: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove every message of a pipe (as truncate -s 0 on a mounted pipe).")

    @OptionGroup var backend: BackendOptions
    @Argument(help: "The pipe.") var pipe: String

    func run() throws {
        let name = try pipeName(pipe)
        let (store, _) = try backend.openStore()
        defer { store.shutdown() }
        guard let log = try store.open(name) else { throw CommandError("no pipe named \(name)") }
        if let failure = awaitCompletion(log.reset) { throw CommandError("reset of \(name) failed: \(failure)") }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the pipes.")

    @OptionGroup var backend: BackendOptions
    @Flag(name: .customShort("l"), help: "One line per pipe with its messages, bytes, last push and retention.")
    var long = false

    func run() throws {
        let (store, _) = try backend.openStore()
        defer { store.shutdown() }
        if long { return try LongListing.print(store) }
        for name in try store.list() where !GroupJournal.isJournal(name) { print(name) }
    }
}
