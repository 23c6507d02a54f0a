import Dispatch
import Logging
import XCTest
import DNPipesCore
import DNPipesTestSupport

/// How a member starts on a journal that others write meanwhile.
final class GroupMemberStartTests: XCTestCase {
    /// A store whose `synchronize` takes a moment (as Kafka's does) tells the journal's observer of entries
    /// before the member's start completes; the member must apply each entry once, or it counts deliveries
    /// twice and moves a message to the dead-letter pipe early.
    func testEntriesArrivingDuringStartAreAppliedOnce() throws {
        let store = InMemoryStore(synchronizeDelay: 0.3)
        var logger = Logger(label: "dnpipes.tests")
        logger.logLevel = .critical
        let settings = GroupSettings(maxDeliveries: 2, memberTimeout: 30, othersMayBeAlive: true)
        let pipe = try PipeName(validating: "jobs"), group = try PipeName(validating: "workers")
        try store.create(pipe)
        try store.open(pipe)!.makeWriter().push([Array("job".utf8)])

        let first = try Groups(store: store, settings: settings, logger: logger).member(group: group, pipe: pipe)
        let delivered = expectation(description: "first delivery")
        first.take(waiter: 1, nonBlocking: false) { grant in
            guard case .message(let offset, _) = grant else { XCTFail("got \(grant)"); return false }
            first.giveBack(offset)
            delivered.fulfill()
            return true
        }
        wait(for: [delivered], timeout: 5)

        // Given out once: the second host's start reads the journal while one more entry comes.
        let journal = try store.open(GroupJournal.name(group: group, pipe: pipe))!
        let written = DispatchSemaphore(value: 0)
        let token = journal.addObserver { written.signal() }
        while journal.bounds().end < 2 {
            guard written.wait(timeout: .now() + 5) == .success else { return XCTFail("the first host's claim and release did not come") }
        }
        journal.removeObserver(token)
        let second = try Groups(store: store, settings: settings, logger: logger).member(group: group, pipe: pipe)
        try journal.makeWriter().push([Array("alive elsewhere".utf8)])

        let again = expectation(description: "second delivery")
        second.take(waiter: 2, nonBlocking: false) { grant in
            if case .message(_, let bytes) = grant { XCTAssertEqual(bytes, Array("job".utf8)) } else { XCTFail("got \(grant)") }
            again.fulfill()
            return true
        }
        wait(for: [again], timeout: 5)
        XCTAssertFalse(store.contains(try PipeName(validating: "jobs.dead")), "moved to the dead-letter pipe after 2 deliveries of 2")
    }
}
