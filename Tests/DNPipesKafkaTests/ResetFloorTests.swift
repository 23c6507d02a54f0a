import DNPipesCore
import XCTest
@testable import DNPipesKafka

/// Resets on Kafka without a broker: the floors read back and committed, the markers of one reset collected,
/// and what a marker does to a stream that meets it.
final class ResetFloorTests: XCTestCase {
    func testFloorsReadBackCoverEveryPartitionAndNeverGoBelowZero() {
        let floors = ResetFloor.floors(partitions: 3, committed: [(1, 42), (0, -1001), (5, 9)])
        XCTAssertEqual(floors, [0, 42, 0], "none committed is 0; an invalid offset is 0; partition 5 is not one of the three")
    }

    func testACommitNeverMovesAFloorBack() {
        XCTAssertEqual(ResetFloor.toCommit([7, 3], over: []), [7, 3], "the current floors could not be read")
        XCTAssertEqual(ResetFloor.toCommit([7, 3], over: [5, 9]), [7, 9], "another host reset partition 1 further")
        XCTAssertNil(ResetFloor.toCommit([7, 3], over: [7, 3]), "nothing to commit")
        XCTAssertNil(ResetFloor.toCommit([7, 3], over: [8, 4]), "a later reset was recorded first")
        XCTAssertEqual(ResetFloor.toCommit([7, 3], over: [10]), [10, 3], "the topic gained a partition")
    }

    func testTheMarkersOfAResetGiveTheFloorsOnceAllAreInOrTheFirstFailureOnce() {
        let markers = ResetMarkers(count: 3)
        XCTAssertNil(markers.add(partition: 2, offset: 30))
        XCTAssertNil(markers.add(partition: 0, offset: 10))
        XCTAssertEqual(markers.add(partition: 1, offset: 20), [10, 20, 30])

        let failing = ResetMarkers(count: 2)
        XCTAssertNil(failing.add(partition: 0, offset: 5))
        XCTAssertTrue(failing.fail())
        XCTAssertFalse(failing.fail(), "the reset completes once")
        XCTAssertNil(failing.add(partition: 1, offset: 6), "no floors after a failure")
    }

    func testAMarkerWrittenHereSkipsWhatTheStreamDeliversBelowItAndAnOlderOneChangesNothing() {
        let s = PartitionStream(partition: 0, windowBytes: 1 << 20, wakeConsumer: {})
        s.start(at: 0)
        _ = s.learnedEnd(high: 0, low: 0)
        _ = s.deliver(offsets: [0, 1], block: MessageBlock([[1], [2]]), markers: [])
        s.noteMarker(at: 4)                               // acknowledged before the consumer fetched it
        XCTAssertEqual(s.bounds().oldest, 5)
        XCTAssertEqual(s.bounds().end, 5)
        _ = s.deliver(offsets: [2, 3, 4, 5, 6], block: MessageBlock([[3], [4], [], [6], [7]]), markers: [2])
        XCTAssertEqual(s.fetch(from: 0, maxBytes: 100)?.offsets, [5, 6])
        XCTAssertEqual(s.streamExtent()?.size, 2 * 2, "positions count from the marker on")
        s.noteMarker(at: 1)
        XCTAssertEqual(s.bounds().oldest, 5, "a floor never moves back")
    }
}
