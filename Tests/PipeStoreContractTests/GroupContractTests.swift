import Dispatch
import Foundation
import XCTest
import DNPipesCore
import DNPipesTestSupport

/// Consumer groups on any store: two `Groups` on one store are two hosts of a cluster (each its own member
/// id, both reading and writing the same journals), so what the journal promises between hosts shows here.
extension StoreContractTests {
    /// Settings that keep the tests short: members that may be alive elsewhere (two `Groups` share the
    /// store), and a member timeout long enough that a live one is never taken for lost mid-test.
    var groupSettings: GroupSettings {
        GroupSettings(maxDeliveries: 2, deadLetterSuffix: ".dead", memberTimeout: 6, othersMayBeAlive: true,
                      claimAheadPerReader: 8)
    }

    /// A host's groups on the store, stopped at tear-down.
    func makeGroups() -> Groups {
        let groups = Groups(store: store, settings: groupSettings, logger: Self.logger)
        atTearDown { groups.shutdown() }
        return groups
    }

    func member(_ groups: Groups, _ group: String, _ pipe: String) throws -> GroupMember {
        try groups.member(group: name(group), pipe: name(pipe))
    }

    func take(_ member: GroupMember, waiter: UInt64, nonBlocking: Bool = false, seconds: Double) -> GroupGrant? {
        takeGrant(member, waiter: waiter, nonBlocking: nonBlocking, seconds: seconds)
    }

    /// Takes one message, failing the test when none comes.
    func takeMessage(_ member: GroupMember, waiter: UInt64, file: StaticString = #filePath, line: UInt = #line) -> (offset: Int64, bytes: [UInt8])? {
        switch take(member, waiter: waiter, seconds: patience) {
        case .message(let offset, let bytes)?: return (offset, bytes)
        case let other: XCTFail("expected a message, got \(String(describing: other))", file: file, line: line); return nil
        }
    }

    /// Waits until the group's member counts nothing left of the pipe: every message done.
    func assertNothingLeft(_ member: GroupMember, file: StaticString = #filePath, line: UInt = #line) {
        let left = LockedValue((free: -1, out: -1))
        let settled = eventually(nil) {
            let answered = DispatchSemaphore(value: 0)
            member.backlog { free, out in
                left.withLock { $0 = (free, out) }
                answered.signal()
            }
            return answered.wait(timeout: .now() + patience) == .success && left.withLock { $0 == (0, 0) }
        }
        XCTAssertTrue(settled, "the group still counts \(left.withLock { $0 }) (free, out) messages", file: file, line: line)
    }

    func testTwoHostsTakeEachMessageExactlyOnce() throws {
        let log = try makePipe("jobs")
        let hosts = [makeGroups(), makeGroups()]
        let members = try hosts.map { try member($0, "workers", "jobs") }
        members.forEach { $0.readerOpened() }
        defer { members.forEach { $0.readerClosed() } }
        // Both hosts have read the journal before the messages come, so both claim from the first on.
        members.forEach { assertNothingLeft($0) }
        let sent = messages("job", 200)
        try write(log, sent)

        let taken = LockedValue<[(host: Int, offset: Int64, bytes: [UInt8])]>([])
        let deadline = Date().addingTimeInterval(patience * 2)
        // Readers on threads of their own, as a mount's are: blocked in a wait, they hold no thread of the
        // global queues, where the stores tell their observers.
        let readers = DispatchGroup()
        for (host, member) in members.enumerated() {
            for reader in 0..<2 {
                readers.enter()
                Thread.detachNewThread {
                    defer { readers.leave() }
                    let waiter = UInt64(host * 10 + reader)
                    while taken.withLock({ $0.count }) < sent.count && Date() < deadline {
                        guard case .message(let offset, let bytes)? = takeGrant(member, waiter: waiter, seconds: 0.5) else { continue }
                        taken.withLock { $0.append((host, offset, bytes)) }
                        member.done(offset)
                    }
                }
            }
        }
        XCTAssertEqual(readers.wait(timeout: .now() + patience * 3), .success, "the readers did not finish")
        let all = taken.withLock { $0 }
        XCTAssertEqual(all.count, sent.count, "messages taken")
        XCTAssertEqual(Set(all.map(\.offset)).count, all.count, "a message was given out twice")
        XCTAssertEqual(Set(all.map(\.bytes)), Set(sent))
        for host in 0..<2 {
            XCTAssertGreaterThan(all.filter { $0.host == host }.count, 0, "host \(host) took no message")
        }
        members.forEach { assertNothingLeft($0) }
    }

    func testGivenBackMessageGoesToTheOtherHost() throws {
        let log = try makePipe("jobs")
        try write(log, [Array("only".utf8)])
        let first = try member(makeGroups(), "workers", "jobs")
        guard let held = takeMessage(first, waiter: 1) else { return }
        XCTAssertEqual(held.bytes, Array("only".utf8))

        let second = try member(makeGroups(), "workers", "jobs")
        // Held by the first host: the second gets nothing meanwhile.
        XCTAssertNil(take(second, waiter: 2, seconds: 0.5).flatMap { grant -> Int64? in
            if case .message(let offset, _) = grant { return offset }
            return nil
        }, "a message held by one host was given to another")
        first.giveBack(held.offset)
        guard let again = takeMessage(second, waiter: 3) else { return }
        XCTAssertEqual(again.offset, held.offset)
        XCTAssertEqual(again.bytes, held.bytes)
        second.done(again.offset)
        assertNothingLeft(first)
    }

    func testSecondGroupSeesEveryMessageAgain() throws {
        let log = try makePipe("jobs")
        let sent = messages("job", 20)
        try write(log, sent)
        let hosts = [makeGroups(), makeGroups()]
        for (group, groups) in zip(["first", "second"], hosts) {
            let member = try member(groups, group, "jobs")
            var got: [[UInt8]] = []
            for i in 0..<sent.count {
                guard let message = takeMessage(member, waiter: UInt64(i)) else { return }
                got.append(message.bytes)
                member.done(message.offset)
            }
            XCTAssertEqual(got, sent, "group \(group) gets every message, oldest first")
            assertNothingLeft(member)
        }
        XCTAssertEqual(Set(try hosts[0].list()), [name("first"), name("second")])
    }

    func testMessageGivenBackTooOftenGoesToTheDeadLetterPipe() throws {
        let log = try makePipe("jobs")
        try write(log, [Array("poison".utf8)])
        let hosts = [makeGroups(), makeGroups()]
        let members = try hosts.map { try member($0, "workers", "jobs") }
        // Given out maxDeliveries times, each time given back, alternately on the two hosts.
        for delivery in 0..<groupSettings.maxDeliveries {
            guard let message = takeMessage(members[delivery % 2], waiter: UInt64(delivery)) else {
                return XCTFail("delivery \(delivery + 1) of \(groupSettings.maxDeliveries) did not come")
            }
            XCTAssertEqual(message.bytes, Array("poison".utf8))
            members[delivery % 2].giveBack(message.offset)
        }
        // The next claim finds it given out too often: it goes to the dead-letter pipe, not to this reader.
        let wrongly = LockedValue(false)
        members[0].take(waiter: 100, nonBlocking: false) { grant in
            if case .message = grant { wrongly.withLock { $0 = true } }
            return false
        }
        defer { members[0].cancel(waiter: 100) }
        let deadName = name("jobs" + groupSettings.deadLetterSuffix)
        XCTAssertTrue(eventually(nil) { store.contains(deadName) }, "no dead-letter pipe \(deadName)")
        guard let dead = try store.open(deadName) else { return XCTFail("no log for \(deadName)") }
        synchronize(dead)
        XCTAssertEqual(fetch(dead, from: 0, count: 1).map(\.bytes), [Array("poison".utf8)])
        XCTAssertFalse(wrongly.withLock { $0 }, "the message was given out once more instead")
        members.forEach { assertNothingLeft($0) }
    }
}

/// One `take`: the grant, or nil when none came within `seconds` (the wait is then cancelled, and a grant
/// that arrives after is refused, so it goes to the next reader).
func takeGrant(_ member: GroupMember, waiter: UInt64, nonBlocking: Bool = false, seconds: Double) -> GroupGrant? {
    let box = LockedValue<(grant: GroupGrant?, abandoned: Bool)>((nil, false))
    let came = DispatchSemaphore(value: 0)
    member.take(waiter: waiter, nonBlocking: nonBlocking) { grant in
        let wanted = box.withLock { box -> Bool in
            guard !box.abandoned else { return false }
            box.grant = grant
            return true
        }
        if wanted { came.signal() }
        return wanted
    }
    if came.wait(timeout: .now() + seconds) == .success { return box.withLock { $0.grant } }
    let grant = box.withLock { box -> GroupGrant? in
        if box.grant == nil { box.abandoned = true }
        return box.grant
    }
    if grant == nil { member.cancel(waiter: waiter) }
    return grant
}
