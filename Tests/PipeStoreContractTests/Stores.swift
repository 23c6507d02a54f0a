import Foundation
import XCTest
import DNPipesCore
import DNPipesEmbedded
import DNPipesKafka
import DNPipesTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Linux's XCTest runs the test methods a class declares itself, not those it inherits, so each store's class
/// lists the contract's checks as its tests, in an extension of its own (the same list for every store).

/// The contract on the in-memory store of the test support target.
final class InMemoryStoreContractTests: ContractCase {
    override func makeStore() throws -> PipeStore { InMemoryStore() }
}

/// The contract on the embedded store, in a fresh data directory per test, removed at tear-down.
final class EmbeddedStoreContractTests: ContractCase {
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
}

/// The contract on Kafka: a `KafkaStore` on the test process's tansu broker, with a topic prefix of its own
/// per test, so that no test sees another's pipes.
final class KafkaStoreContractTests: ContractCase {
    override func makeStore() throws -> PipeStore {
        let broker = TestBroker.shared
        if let failure = broker.failure {
            XCTFail(failure)
            throw XCTSkip(failure)
        }
        let prefix = "contract-\(String(UInt64.random(in: 0...UInt64.max), radix: 36))-"
        return try KafkaStore(configuration: KafkaConfiguration(brokers: broker.address, topicPrefix: prefix, connectTimeout: 10),
                              logger: Self.logger)
    }
}

/// A Kafka log counts its stream once a reader streams it.
extension KafkaStore: CountsStreamLater {}

extension InMemoryStoreContractTests {
    func testCreateContainsListRemove() throws { try checkCreateContainsListRemove() }
    func testPushThenFetchInOrderWithOffsets() throws { try checkPushThenFetchInOrderWithOffsets() }
    func testFlushCompletesAfterMessagesAreStored() throws { try checkFlushCompletesAfterMessagesAreStored() }
    func testObserversAreToldOfPushResetAndRemoval() throws { try checkObserversAreToldOfPushResetAndRemoval() }
    func testResetMovesOldestToTheEndAndOffsetsKeepGrowing() throws { try checkResetMovesOldestToTheEndAndOffsetsKeepGrowing() }
    func testRemovedPipeReportsRemoved() throws { try checkRemovedPipeReportsRemoved() }
    func testStreamExtentCountsMessagesAndNewlines() throws { try checkStreamExtentCountsMessagesAndNewlines() }
    func testWritersNeverInterleaveWithinAPush() throws { try checkWritersNeverInterleaveWithinAPush() }
    func testReadinessAgreesWithFetch() throws { try checkReadinessAgreesWithFetch() }
    func testTwoHostsTakeEachMessageExactlyOnce() throws { try checkTwoHostsTakeEachMessageExactlyOnce() }
    func testGivenBackMessageGoesToTheOtherHost() throws { try checkGivenBackMessageGoesToTheOtherHost() }
    func testSecondGroupSeesEveryMessageAgain() throws { try checkSecondGroupSeesEveryMessageAgain() }
    func testMessageGivenBackTooOftenGoesToTheDeadLetterPipe() throws { try checkMessageGivenBackTooOftenGoesToTheDeadLetterPipe() }
}

extension EmbeddedStoreContractTests {
    func testCreateContainsListRemove() throws { try checkCreateContainsListRemove() }
    func testPushThenFetchInOrderWithOffsets() throws { try checkPushThenFetchInOrderWithOffsets() }
    func testFlushCompletesAfterMessagesAreStored() throws { try checkFlushCompletesAfterMessagesAreStored() }
    func testObserversAreToldOfPushResetAndRemoval() throws { try checkObserversAreToldOfPushResetAndRemoval() }
    func testResetMovesOldestToTheEndAndOffsetsKeepGrowing() throws { try checkResetMovesOldestToTheEndAndOffsetsKeepGrowing() }
    func testRemovedPipeReportsRemoved() throws { try checkRemovedPipeReportsRemoved() }
    func testStreamExtentCountsMessagesAndNewlines() throws { try checkStreamExtentCountsMessagesAndNewlines() }
    func testWritersNeverInterleaveWithinAPush() throws { try checkWritersNeverInterleaveWithinAPush() }
    func testReadinessAgreesWithFetch() throws { try checkReadinessAgreesWithFetch() }
    func testTwoHostsTakeEachMessageExactlyOnce() throws { try checkTwoHostsTakeEachMessageExactlyOnce() }
    func testGivenBackMessageGoesToTheOtherHost() throws { try checkGivenBackMessageGoesToTheOtherHost() }
    func testSecondGroupSeesEveryMessageAgain() throws { try checkSecondGroupSeesEveryMessageAgain() }
    func testMessageGivenBackTooOftenGoesToTheDeadLetterPipe() throws { try checkMessageGivenBackTooOftenGoesToTheDeadLetterPipe() }
}

extension KafkaStoreContractTests {
    func testCreateContainsListRemove() throws { try checkCreateContainsListRemove() }
    func testPushThenFetchInOrderWithOffsets() throws { try checkPushThenFetchInOrderWithOffsets() }
    func testFlushCompletesAfterMessagesAreStored() throws { try checkFlushCompletesAfterMessagesAreStored() }
    func testObserversAreToldOfPushResetAndRemoval() throws { try checkObserversAreToldOfPushResetAndRemoval() }
    func testResetMovesOldestToTheEndAndOffsetsKeepGrowing() throws { try checkResetMovesOldestToTheEndAndOffsetsKeepGrowing() }
    func testRemovedPipeReportsRemoved() throws { try checkRemovedPipeReportsRemoved() }
    func testStreamExtentCountsMessagesAndNewlines() throws { try checkStreamExtentCountsMessagesAndNewlines() }
    func testWritersNeverInterleaveWithinAPush() throws { try checkWritersNeverInterleaveWithinAPush() }
    func testReadinessAgreesWithFetch() throws { try checkReadinessAgreesWithFetch() }
    func testTwoHostsTakeEachMessageExactlyOnce() throws { try checkTwoHostsTakeEachMessageExactlyOnce() }
    func testGivenBackMessageGoesToTheOtherHost() throws { try checkGivenBackMessageGoesToTheOtherHost() }
    func testSecondGroupSeesEveryMessageAgain() throws { try checkSecondGroupSeesEveryMessageAgain() }
    func testMessageGivenBackTooOftenGoesToTheDeadLetterPipe() throws { try checkMessageGivenBackTooOftenGoesToTheDeadLetterPipe() }
}
