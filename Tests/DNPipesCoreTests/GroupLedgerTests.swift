import DNPipesCore
import XCTest

final class GroupLedgerTests: XCTestCase {
    func testEntriesRoundTripAsText() {
        let records: [GroupRecord] = [
            .claim(member: "a-1", offsets: [3, 4, 5, 9]), .done(member: "a-1", offsets: [3]),
            .release(member: "b", offsets: [4, 5]), .unclaim(member: "b", offsets: [7]),
            .dead(member: "b", offsets: [9]), .alive(member: "a-1"), .expire(by: "b", member: "a-1"),
        ]
        for record in records {
            XCTAssertEqual(GroupRecord(line: Array(record.line.utf8)), record, record.line)
        }
        XCTAssertEqual(GroupRecord.claim(member: "m", offsets: [3, 4, 5, 9]).line, "claim m 3-5,9")
        XCTAssertNil(GroupRecord(line: Array("claim m".utf8)))
        XCTAssertNil(GroupRecord(line: Array("claim m 5-3".utf8)))
        XCTAssertNil(GroupRecord(line: Array("frobnicate m 1".utf8)), "an unknown entry is skipped, not misread")
    }

    /// The first claim applied wins; a later claim of the same message gets nothing.
    func testOnlyTheFirstClaimWins() {
        var ledger = GroupLedger()
        XCTAssertEqual(ledger.apply(.claim(member: "a", offsets: [0, 1])).won, [0, 1])
        XCTAssertEqual(ledger.apply(.claim(member: "b", offsets: [1, 2])).won, [2])
        XCTAssertEqual(ledger.holder(of: 1), "a")
        XCTAssertEqual(ledger.free(from: 0, below: 5, limit: 10), [3, 4])
    }

    func testDoneAdvancesTheFloorAndReleaseFreesForTheNextClaim() {
        var ledger = GroupLedger()
        ledger.apply(.claim(member: "a", offsets: [0, 1, 2]))
        ledger.apply(.done(member: "a", offsets: [1]))
        XCTAssertEqual(ledger.floor, 0)
        ledger.apply(.done(member: "a", offsets: [0]))
        XCTAssertEqual(ledger.floor, 2, "0 and 1 done")
        ledger.apply(.release(member: "a", offsets: [2]))
        XCTAssertEqual(ledger.free(from: 0, below: 4, limit: 10), [2, 3], "given back before new")
        ledger.apply(.release(member: "b", offsets: [2]))
        XCTAssertTrue(ledger.isFree(2), "a release by a member that does not hold it changes nothing")
        XCTAssertEqual(ledger.apply(.claim(member: "b", offsets: [2])).won, [2])
        XCTAssertEqual(ledger.deliveries(of: 2), 2)
        ledger.apply(.done(member: "b", offsets: [2]))
        XCTAssertEqual(ledger.floor, 3)
        XCTAssertEqual(ledger.deliveries(of: 2), 0)
    }

    /// Claims ahead given back unread are not deliveries; an expiry frees all a member held.
    func testUnclaimIsNoDeliveryAndExpiryFreesEverything() {
        var ledger = GroupLedger()
        ledger.apply(.claim(member: "a", offsets: [0, 1, 2]))
        ledger.apply(.unclaim(member: "a", offsets: [1, 2]))
        XCTAssertEqual(ledger.deliveries(of: 1), 0)
        XCTAssertEqual(ledger.deliveries(of: 0), 1)
        ledger.apply(.claim(member: "a", offsets: [1]))
        let change = ledger.apply(.expire(by: "b", member: "a"))
        XCTAssertEqual(change.expiredMember, "a")
        XCTAssertEqual(change.expiredOffsets, [0, 1])
        XCTAssertNil(ledger.holdings["a"])
        XCTAssertEqual(ledger.free(from: 0, below: 3, limit: 10), [0, 1, 2])
        XCTAssertEqual(ledger.backlog(from: 0, below: 3).free, 3)
    }

    /// A message done out of order (a late done after an expiry) stays done, and a claim past the frontier
    /// leaves what it skipped free.
    func testDoneAfterExpiryAndClaimsPastTheFrontier() {
        var ledger = GroupLedger()
        ledger.apply(.claim(member: "a", offsets: [5]))
        XCTAssertEqual(ledger.free(from: 0, below: 6, limit: 10), [0, 1, 2, 3, 4])
        ledger.apply(.expire(by: "b", member: "a"))
        ledger.apply(.claim(member: "b", offsets: [5]))
        ledger.apply(.done(member: "a", offsets: [5]))
        XCTAssertTrue(ledger.isDone(5))
        XCTAssertNil(ledger.holdings["b"], "b's copy is done too: at least once")
        XCTAssertEqual(ledger.backlog(from: 0, below: 6).free, 5)
        XCTAssertEqual(ledger.backlog(from: 3, below: 6).free, 2, "offsets reset away are not backlog")
    }

    func testJournalNamesSplitUnambiguously() throws {
        let name = try GroupJournal.name(group: PipeName(validating: "a.b"), pipe: PipeName(validating: "c.d"))
        XCTAssertEqual(name.value, ".group.3.a.b.c.d")
        let parsed = try XCTUnwrap(GroupJournal.parse(name))
        XCTAssertEqual(parsed.group.value, "a.b")
        XCTAssertEqual(parsed.pipe.value, "c.d")
        XCTAssertNil(GroupJournal.parse(try PipeName(validating: ".group.9.short")))
        XCTAssertNil(GroupJournal.parse(try PipeName(validating: "plain")))
        XCTAssertThrowsError(try GroupJournal.name(group: PipeName(validating: String(repeating: "g", count: 200)),
                                                   pipe: PipeName(validating: String(repeating: "p", count: 60))))
    }
}
