import DNPipesCore
import Foundation
import XCTest
@testable import DNPipesKafka

/// The names a Kafka mount lists, taken through the listings the metadata thread takes, without a broker: the
/// grace of a pipe made here, what a removal here hides, and when lookups stop asking the brokers.
final class PipeNamesTests: XCTestCase {
    private let t0 = Date(timeIntervalSince1970: 1_000_000)

    private func name(_ text: String) -> PipeName { try! PipeName(validating: text) }

    /// Takes one listing of `listed` at `seconds` after t0 as the store does, keeping every graced name (as when
    /// no reader has the pipe open); returns the names.
    private func list(_ names: inout PipeNames, _ listed: [String], at seconds: Double) -> [String] {
        let (seen, graced) = names.beginListing(Set(listed.map(name)), partitionCounts: [:], now: t0.addingTimeInterval(seconds))
        return names.finishListing(seen.union(graced.keys), graced: graced).map(\.value).sorted()
    }

    func testAPipeMadeHereIsListedWhileItsTopicIsMadeAndForTenSecondsAfterUnlessAListingHasIt() {
        var names = PipeNames()
        XCTAssertTrue(names.reserve(name("jobs"), now: t0))
        XCTAssertFalse(names.reserve(name("jobs"), now: t0), "the name is taken")
        XCTAssertEqual(list(&names, [], at: 30), ["jobs"], "still being made, however long that takes")
        names.made(name("jobs"), refused: false, now: t0.addingTimeInterval(30))
        XCTAssertEqual(list(&names, [], at: 39.5), ["jobs"], "9.5 s after its topic was made")
        XCTAssertEqual(list(&names, [], at: 40.5), [], "past the grace, a listing without it means it is gone")
        XCTAssertFalse(names.contains(name("jobs")))
    }

    func testOnceAListingHasAPipeTheNextOneWithoutItEndsIt() {
        var names = PipeNames()
        names.found(name("jobs"), now: t0)
        XCTAssertEqual(list(&names, [], at: 1), ["jobs"], "graced")
        XCTAssertEqual(list(&names, ["jobs", "logs"], at: 2), ["jobs", "logs"])
        XCTAssertEqual(list(&names, ["logs"], at: 3), ["logs"], "no grace once listed")
    }

    func testATopicTheBrokersRefuseTakesItsNameAway() {
        var names = PipeNames()
        XCTAssertTrue(names.reserve(name("jobs"), now: t0))
        names.made(name("jobs"), refused: true, now: t0.addingTimeInterval(1))
        XCTAssertFalse(names.contains(name("jobs")))
        XCTAssertEqual(list(&names, [], at: 2), [])
        XCTAssertTrue(names.reserve(name("jobs"), now: t0.addingTimeInterval(3)), "the name is free again")
    }

    func testAPipeRemovedHereStaysHiddenWhileListingsStillShowItThenIsForgotten() {
        var names = PipeNames()
        XCTAssertEqual(list(&names, ["jobs"], at: 0), ["jobs"])
        names.remove(name("jobs"))
        XCTAssertEqual(list(&names, ["jobs"], at: 1), [], "its topic is being deleted")
        XCTAssertFalse(names.mayAsk(about: name("jobs"), now: .now()), "nor does a lookup bring it back meanwhile")
        XCTAssertTrue(names.deleted(name("jobs"), failed: false, now: t0.addingTimeInterval(3)))
        XCTAssertEqual(list(&names, ["jobs"], at: 12.5), [], "9.5 s after the deletion, a listing may still have it")
        XCTAssertEqual(list(&names, ["jobs"], at: 13.5), ["jobs"], "10 s on, it is a pipe made again elsewhere")
    }

    func testADeletionIsForgottenAtTheFirstListingWithoutTheTopic() {
        var names = PipeNames()
        _ = list(&names, ["jobs"], at: 0)
        names.remove(name("jobs"))
        _ = names.deleted(name("jobs"), failed: false, now: t0.addingTimeInterval(1))
        XCTAssertEqual(list(&names, [], at: 2), [])
        XCTAssertEqual(list(&names, ["jobs"], at: 3), ["jobs"], "made again elsewhere, 2 s after")
    }

    func testADeletionTheBrokersRefuseBringsThePipeBackWithTheNextListing() {
        var names = PipeNames()
        _ = list(&names, ["jobs"], at: 0)
        names.remove(name("jobs"))
        XCTAssertTrue(names.deleted(name("jobs"), failed: true, now: t0.addingTimeInterval(1)))
        XCTAssertEqual(list(&names, ["jobs"], at: 2), ["jobs"])
    }

    func testADeletionFinishingAfterThePipeWasMadeAgainLeavesTheNewPipeAlone() {
        var names = PipeNames()
        _ = list(&names, ["jobs"], at: 0)
        names.remove(name("jobs"))
        XCTAssertTrue(names.reserve(name("jobs"), now: t0.addingTimeInterval(1)))
        XCTAssertFalse(names.deleted(name("jobs"), failed: false, now: t0.addingTimeInterval(2)), "the creation owns the name")
        XCTAssertEqual(list(&names, ["jobs"], at: 3), ["jobs"], "not hidden as deleted")
    }

    func testLookupsAreAnsweredFromTheCacheForTwoSecondsAfterOneWentUnanswered() {
        var names = PipeNames()
        let at = { (seconds: Double) in DispatchTime(uptimeNanoseconds: UInt64((100 + seconds) * 1e9)) }
        XCTAssertTrue(names.mayAsk(about: name("a"), now: at(0)))
        names.lookupUnanswered(at: at(0))
        XCTAssertFalse(names.mayAsk(about: name("b"), now: at(1.9)))
        XCTAssertTrue(names.mayAsk(about: name("b"), now: at(2.1)))
    }

    func testAGracedNameIsAskedAboutAloneOnlyAfterTwoSeconds() {
        XCTAssertFalse(PipeNames.mayRecheck(createdAt: t0, now: t0.addingTimeInterval(1.9)))
        XCTAssertTrue(PipeNames.mayRecheck(createdAt: t0, now: t0.addingTimeInterval(2)))
    }

    func testPartitionCountsComeFromTheLatestListingOrALookup() {
        var names = PipeNames()
        XCTAssertEqual(names.partitionCount(of: "jobs"), 1, "unknown")
        names.notePartitions(3, of: "jobs")
        XCTAssertEqual(names.partitionCount(of: "jobs"), 3)
        _ = names.beginListing([name("jobs")], partitionCounts: ["jobs": 5], now: t0)
        XCTAssertEqual(names.partitionCount(of: "jobs"), 5)
        _ = names.beginListing([], partitionCounts: [:], now: t0)
        XCTAssertEqual(names.partitionCount(of: "jobs"), 1)
    }

    func testInAListingOfThousandsOfTopicsOnlyWhatThisMountChangedIsCorrected() {
        var names = PipeNames()
        let cluster = (0..<5000).map { "topic-\($0)" }
        XCTAssertEqual(list(&names, cluster, at: 0).count, 5000)
        names.remove(name("topic-17"))
        XCTAssertTrue(names.reserve(name("new"), now: t0.addingTimeInterval(1)))
        names.made(name("new"), refused: false, now: t0.addingTimeInterval(1))
        names.found(name("topic-4999"), now: t0.addingTimeInterval(1))
        let second = list(&names, cluster, at: 2)
        XCTAssertEqual(second.count, 5000, "one hidden as being removed here, one made here and not listed yet")
        XCTAssertFalse(second.contains("topic-17"))
        XCTAssertTrue(second.contains("new"))
        // Listed once, "new" has no grace any more, and neither has topic-4999, which the listing had.
        let third = list(&names, cluster.filter { $0 != "topic-4999" } + ["new"], at: 3)
        XCTAssertEqual(third.count, 4999)
        XCTAssertFalse(third.contains("topic-4999"), "deleted elsewhere: the listing had it, so no grace")
        let fourth = list(&names, cluster.filter { $0 != "topic-4999" }, at: 4)
        XCTAssertEqual(fourth.count, 4998, "4999 topics, topic-17 still hidden")
        XCTAssertFalse(fourth.contains("new"), "once listed, a listing without it ends it")
    }
}
