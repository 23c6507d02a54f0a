import DNPipesCore
import XCTest
@testable import DNPipesKafka

/// The shared window of one partition, fed as the consumer thread feeds it, without a broker: what readers
/// get from memory, when it asks for a rewind, how it makes room, what a reset marker does, and what a
/// stream that only counts keeps.
final class PartitionStreamTests: XCTestCase {
    /// Counts the consumer wake-ups the stream asks for.
    // @unchecked Sendable: the count is guarded by its lock.
    private final class Wakes: @unchecked Sendable {
        private let lock = NSLock()
        private var n = 0
        func wake() { lock.lock(); n += 1; lock.unlock() }
        var count: Int { lock.lock(); defer { lock.unlock() }; return n }
    }

    private func stream(windowBytes: Int = 1 << 20, floor: Int64 = 0, wakes: Wakes = Wakes()) -> PartitionStream {
        let s = PartitionStream(partition: 0, windowBytes: windowBytes, wakeConsumer: { wakes.wake() })
        s.start(at: floor)
        _ = s.learnedEnd(high: floor, low: 0)
        return s
    }

    /// Delivers messages `first ..< first + count`, each `size` bytes of one letter, as one consumed batch.
    private func deliver(_ s: PartitionStream, from first: Int64, count: Int, size: Int = 10, markers: Set<Int> = []) {
        let messages = (0..<count).map { _ in [UInt8](repeating: UInt8(ascii: "m"), count: size) }
        _ = s.deliver(offsets: (0..<count).map { first + Int64($0) }, block: MessageBlock(messages), markers: markers)
    }

    func testReadersInsideTheWindowReadFromMemoryAndTheSizeCountsEveryMessage() {
        let s = stream()
        deliver(s, from: 0, count: 100)
        let batch = s.fetch(from: 40, maxBytes: 55)
        XCTAssertEqual(batch?.offsets.first, 40)
        XCTAssertEqual(batch?.count, 5, "about maxBytes: five framed messages of 11 bytes")
        XCTAssertEqual(s.streamExtent()?.size, 100 * 11)
        XCTAssertEqual(s.streamExtent()?.countedEnd, 100)
        XCTAssertEqual(s.streamAnchor(atOrBefore: 11 * 70)?.offset, 64)
        XCTAssertNil(s.fetch(from: 100, maxBytes: 10), "at the front a reader waits")
    }

    func testAReaderBehindTheWindowAsksForARewindOnceAndTheStreamIsNotCaughtUpUntilItIsMade() {
        let wakes = Wakes()
        let s = stream(windowBytes: 100, wakes: wakes)
        deliver(s, from: 0, count: 50)                        // 500 bytes: over the window, paused
        XCTAssertNotNil(s.fetch(from: 49, maxBytes: 10))     // a reader at the front makes room
        XCTAssertNil(s.fetch(from: 0, maxBytes: 10), "offset 0 was evicted")
        XCTAssertNil(s.fetch(from: 5, maxBytes: 10))
        let requests = s.takeRequests()
        XCTAssertEqual(requests.rewind, 0, "the lowest offset asked for")
        XCTAssertFalse(s.hasReached(50), "a rewind taken but not made yet")
        s.rewound(to: 0)
        XCTAssertFalse(s.hasReached(50))
        deliver(s, from: 0, count: 50)
        XCTAssertTrue(s.hasReached(50))
        XCTAssertEqual(s.fetch(from: 0, maxBytes: 10)?.offsets.first, 0)
        XCTAssertEqual(s.streamExtent()?.size, 50 * 11, "a refetch is not counted twice")
        XCTAssertGreaterThan(wakes.count, 0)
    }

    func testAFullWindowPausesUntilReadersPassEnoughOfIt() {
        let wakes = Wakes()
        let s = stream(windowBytes: 1000, wakes: wakes)
        let full = s.deliver(offsets: Array(0..<200), block: MessageBlock((0..<200).map { _ in [UInt8](repeating: 1, count: 10) }),
                             markers: []).full
        XCTAssertTrue(full)
        XCTAssertFalse(s.takeRequests().resume, "paused while over budget")
        _ = s.fetch(from: 10, maxBytes: 10)                  // passed little: still over half the budget
        XCTAssertFalse(s.takeRequests().resume)
        let before = wakes.count
        _ = s.fetch(from: 199, maxBytes: 10)                 // passed nearly all of it
        XCTAssertTrue(s.takeRequests().resume)
        XCTAssertGreaterThan(wakes.count, before, "the consumer is woken to fetch again")
    }

    func testAResetMarkerStartsTheStreamAgainAndReadersSkipWhatLayBeforeIt() {
        let s = stream()
        deliver(s, from: 0, count: 10)
        deliver(s, from: 10, count: 3, markers: [0])         // offset 10 is a marker
        XCTAssertEqual(s.bounds().oldest, 11)
        XCTAssertEqual(s.fetch(from: 0, maxBytes: 100)?.offsets, [11, 12])
        XCTAssertEqual(s.streamExtent()?.origin, 11)
        XCTAssertEqual(s.streamExtent()?.size, 2 * 11, "positions start again at the marker")
    }

    func testAStreamThatOnlyCountsKeepsNothingAndRewindsWhenReadersCome() {
        let s = stream()
        s.countOnly()
        deliver(s, from: 0, count: 20)
        XCTAssertEqual(s.streamExtent()?.size, 20 * 11)
        XCTAssertNil(s.fetch(from: 0, maxBytes: 100), "nothing is kept")
        _ = s.takeRequests()                                  // (that fetch asked for a rewind itself)
        s.rewound(to: 20)
        s.retainForReaders()
        XCTAssertEqual(s.takeRequests().rewind, 0, "back to the floor for the readers")
        s.rewound(to: 0)
        deliver(s, from: 0, count: 20)
        XCTAssertEqual(s.fetch(from: 0, maxBytes: 1000)?.count, 20)
    }

    func testACountingStreamOfAPipeWrittenHereHoldsUntilAStatAReaderOrTheLastCloseWantsMore() {
        let wakes = Wakes()
        let writers = LockedValue(0)
        let s = PartitionStream(partition: 0, windowBytes: 1 << 20, writers: writers, wakeConsumer: { wakes.wake() })
        s.start(at: 0)
        _ = s.learnedEnd(high: 0, low: 0)
        s.countOnly()
        XCTAssertFalse(deliverNumbered(s, from: 0, count: 5).hold, "nobody writes here: it fetches on")
        XCTAssertFalse(s.reachedEnd(at: 5, low: 0).hold)
        writers.withLock { $0 = 1 }
        XCTAssertTrue(deliverNumbered(s, from: 5, count: 5).hold, "written here, no stat waiting")
        XCTAssertFalse(s.takeRequests().resume)
        XCTAssertEqual(s.nextOffset, 10, "it goes on from there")
        // A stat: fetch to the end of the partition, then hold again.
        let counted = LockedValue(0)
        let before = wakes.count
        s.countToEnd { counted.withLock { $0 += 1 } }
        XCTAssertTrue(s.takeRequests().resume)
        XCTAssertGreaterThan(wakes.count, before, "the consumer is woken to take the partition again")
        XCTAssertFalse(deliverNumbered(s, from: 10, count: 5).hold, "on its way to the end")
        XCTAssertEqual(counted.withLock { $0 }, 0)
        XCTAssertTrue(s.reachedEnd(at: 15, low: 0).hold)
        XCTAssertEqual(counted.withLock { $0 }, 1, "the stat is answered at the end")
        XCTAssertEqual(s.streamExtent()?.size, 15 * 11)
        // The last writer closes: it fetches on.
        writers.withLock { $0 = 0 }
        s.writersGone()
        XCTAssertTrue(s.takeRequests().resume)
        XCTAssertFalse(deliverNumbered(s, from: 15, count: 5).hold)
        // Readers come: back to the floor for them, and never held.
        writers.withLock { $0 = 1 }
        s.retainForReaders()
        let requests = s.takeRequests()
        XCTAssertEqual(requests.rewind, 0, "readers start at the floor")
        s.rewound(to: 0)
        XCTAssertFalse(deliverNumbered(s, from: 0, count: 20).hold, "a stream with readers fetches on")
        XCTAssertEqual(s.fetch(from: 0, maxBytes: 1000)?.count, 20)
    }

    /// Delivers messages `first ..< first + count` as one consumed batch, each the ten digits of its offset.
    private func deliverNumbered(_ s: PartitionStream, from first: Int64, count: Int) -> (changed: Bool, full: Bool, hold: Bool) {
        let offsets = (0..<Int64(count)).map { first + $0 }
        return s.deliver(offsets: offsets, block: MessageBlock(offsets.map { Array(digits($0).utf8) }), markers: [])
    }

    private func digits(_ offset: Int64) -> String {
        let text = String(offset)
        return String(repeating: "0", count: 10 - text.count) + text
    }

    private func texts(_ batch: MessageBatch?) -> [String] { (batch?.messages ?? []).map { String(decoding: $0, as: UTF8.self) } }

    func testAReaderAtTheFrontOfAFullWindowLeavesAQuarterOfTheBudgetBehindIt() {
        let wakes = Wakes()
        let s = stream(windowBytes: 1000, wakes: wakes)
        XCTAssertTrue(deliverNumbered(s, from: 0, count: 200).full, "2000 bytes in a window of 1000")
        XCTAssertEqual(s.fetch(from: 199, maxBytes: 10)?.offsets, [199])
        // Below 199, the newest 250 bytes stay: 25 messages of 10 bytes, from 174 on (a 26th would be 260).
        XCTAssertEqual(s.fetch(from: 174, maxBytes: 10)?.offsets, [174])
        XCTAssertNil(s.fetch(from: 173, maxBytes: 10), "evicted")
        let requests = s.takeRequests()
        XCTAssertEqual(requests.rewind, 173)
        XCTAssertTrue(requests.resume, "260 bytes left, under half the budget")
    }

    func testAReaderPassingLittleOfAFullWindowFreesOnlyWhatLiesAQuarterBudgetBehindIt() {
        let s = stream(windowBytes: 1000)
        XCTAssertTrue(deliverNumbered(s, from: 0, count: 200).full)
        XCTAssertEqual(s.fetch(from: 60, maxBytes: 10)?.offsets, [60])
        // Below 60 the newest 250 bytes stay (35..<60): the window is 1650 bytes, still paused.
        XCTAssertEqual(s.fetch(from: 35, maxBytes: 10)?.offsets, [35])
        XCTAssertNil(s.fetch(from: 34, maxBytes: 10))
        XCTAssertFalse(s.takeRequests().resume)
    }

    func testMessagesStayWhereTheyAreWhenTheWindowDropsItsEvictedHead() {
        // Over 4096 evicted messages, the window lets go of their bookkeeping and renumbers its chunks.
        let s = stream(windowBytes: 50_000)
        for chunk in 0..<6 { _ = deliverNumbered(s, from: Int64(chunk * 1000), count: 1000) }
        XCTAssertFalse(s.takeRequests().resume, "60000 bytes: paused")
        XCTAssertEqual(texts(s.fetch(from: 5990, maxBytes: 10)), [digits(5990)])
        // Below 5990 the newest 12500 bytes stay: from 4740 on, in what was the fifth chunk.
        let first = s.fetch(from: 4740, maxBytes: 10_000)
        XCTAssertEqual(first?.offsets.first, 4740)
        XCTAssertEqual(first?.offsets.last, 4999, "one batch is served from one chunk")
        XCTAssertEqual(texts(first).first, digits(4740))
        XCTAssertEqual(texts(first).last, digits(4999))
        XCTAssertEqual(texts(s.fetch(from: 5500, maxBytes: 10)), [digits(5500)])
        XCTAssertNil(s.fetch(from: 4739, maxBytes: 10))
        XCTAssertEqual(s.takeRequests().rewind, 4739)
        s.rewound(to: 4739)
        _ = deliverNumbered(s, from: 4739, count: 1)
        XCTAssertEqual(texts(s.fetch(from: 4739, maxBytes: 10)), [digits(4739)], "the window starts anew at a rewind")
        XCTAssertFalse(deliverNumbered(s, from: 4740, count: 2000).full)
        XCTAssertEqual(texts(s.fetch(from: 6500, maxBytes: 10)), [digits(6500)])
        XCTAssertEqual(s.streamExtent()?.size, 6740 * 11, "each offset counted once, refetches included")
    }
}
