import Foundation
import XCTest
import DNPipesCore
import DNPipesEmbedded
import DNPipesKafka
import DNPipesTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The contract on the embedded store, in a fresh data directory per test, removed at tear-down.
final class EmbeddedStoreContractTests: StoreContractTests {
    private var root: String?

    override func makeStore() throws -> PipeStore {
        var template = Array((NSTemporaryDirectory() + "/dnpipes-contract-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        let root = String(cString: made)
        self.root = root
        return try EmbeddedStore(directory: root + "/data", logger: Self.logger)
    }

    override func tearDown() {
        super.tearDown()
        if let root { try? FileManager.default.removeItem(atPath: root) }
        root = nil
    }

    /// What a flush made durable, a reset's new oldest offset included, is there for the next daemon.
    func testFlushedMessagesAndResetsOutliveTheStore() throws {
        let directory = try XCTUnwrap(root) + "/other"
        var before: (oldest: Int64, end: Int64) = (0, 0)
        do {
            let first = try EmbeddedStore(directory: directory, logger: Self.logger)
            try first.create(name("jobs"))
            let log = try XCTUnwrap(try first.open(name("jobs")))
            try write(log, messages("old", 4))
            reset(log)
            try write(log, messages("new", 3))
            before = log.bounds()
            first.shutdown()
        }
        let second = try EmbeddedStore(directory: directory, logger: Self.logger)
        defer { second.shutdown() }
        XCTAssertEqual(try second.list(), [name("jobs")])
        let log = try XCTUnwrap(try second.open(name("jobs")))
        XCTAssertEqual(log.bounds().oldest, before.oldest)
        XCTAssertEqual(log.bounds().end, before.end)
        XCTAssertEqual(fetch(log, from: 0, count: 3).map(\.bytes), messages("new", 3))
    }
}

/// The contract on Kafka: a `KafkaStore` on the test process's tansu broker, with a topic prefix of its own
/// per test, so that no test sees another's pipes.
final class KafkaStoreContractTests: StoreContractTests {
    private var prefix = ""

    override func makeStore() throws -> PipeStore {
        prefix = "contract-\(String(UInt64.random(in: 0...UInt64.max), radix: 36))-"
        return try makeKafkaStore()
    }

    private func makeKafkaStore() throws -> KafkaStore {
        let broker = TestBroker.shared
        if let failure = broker.failure {
            XCTFail(failure)
            throw XCTSkip(failure)
        }
        return try KafkaStore(configuration: KafkaConfiguration(brokers: broker.address, topicPrefix: prefix, connectTimeout: 10),
                              logger: Self.logger)
    }

    /// Another host's store (the same cluster and prefix) finds a pipe made here when it looks it up, and
    /// reads what was pushed here, resets included.
    func testAnotherHostSeesPipesMessagesAndResets() throws {
        let log = try makePipe("jobs")
        try write(log, messages("old", 4))
        reset(log)
        try write(log, messages("new", 3))

        let other = try makeKafkaStore()
        atTearDown { other.shutdown() }
        XCTAssertTrue(other.lookUp(name("jobs")), "a pipe made on another host is found by a lookup")
        let theirs = try XCTUnwrap(try other.open(name("jobs")))
        synchronize(theirs)
        XCTAssertEqual(theirs.bounds().oldest, log.bounds().oldest, "the reset's oldest offset")
        XCTAssertEqual(fetch(theirs, from: 0, count: 3).map(\.bytes), messages("new", 3))
    }
}

/// A Kafka log counts its stream once a reader streams it.
extension KafkaStore: CountsStreamLater {}
