import Dispatch
import Foundation
import XCTest
import DNPipesCore
import DNPipesTestSupport

/// What `PipeStore`, `PipeLog` and `PipeWriter` promise (see PipeStore.swift), for any store.
extension StoreContractTests {
    func testCreateContainsListRemove() throws {
        let a = name("alpha"), b = name("beta")
        XCTAssertFalse(store.contains(a))
        XCTAssertNil(try store.open(a))
        XCTAssertTrue(try store.create(a))
        XCTAssertFalse(try store.create(a), "a second create of an existing name returns false")
        XCTAssertTrue(try store.create(b))
        XCTAssertTrue(store.contains(a))
        XCTAssertEqual(try store.list(), [a, b])
        XCTAssertNotNil(try store.open(a))

        try store.remove(a)
        XCTAssertFalse(store.contains(a))
        XCTAssertEqual(try store.list(), [b])
        XCTAssertNil(try store.open(a))
        XCTAssertThrowsError(try store.remove(a)) { XCTAssertEqual($0 as? PipeError, .noSuchPipe(a)) }
        XCTAssertTrue(try store.create(a), "a removed name can be made again")
    }

    func testPushThenFetchInOrderWithOffsets() throws {
        let log = try makePipe("jobs")
        let writer = try log.makeWriter()
        let sent = messages("m", 30)
        for start in stride(from: 0, to: sent.count, by: 7) {
            try push(writer, Array(sent[start..<min(start + 7, sent.count)]))
        }
        flush(writer)

        let got = fetch(log, from: log.bounds().oldest, count: sent.count)
        XCTAssertEqual(got.map(\.bytes), sent)
        let offsets = got.map(\.offset)
        XCTAssertEqual(offsets, offsets.sorted(), "offsets ascend")
        XCTAssertEqual(Set(offsets).count, offsets.count, "one offset per message")
        XCTAssertGreaterThanOrEqual(offsets.first ?? -1, log.bounds().oldest)
        XCTAssertLessThan(offsets.last ?? .max, log.bounds().end)
        guard offsets.count == sent.count else { return }

        // From a message's offset on, the fetch starts with that message; a tiny maxBytes still brings one.
        guard case .messages(let one) = try log.fetch(from: offsets[10], maxBytes: 1) else { return XCTFail("no message at \(offsets[10])") }
        XCTAssertEqual(one.offsets, [offsets[10]])
        XCTAssertEqual(one.messages, [sent[10]])
        XCTAssertEqual(fetch(log, from: offsets[10], count: 20).map(\.bytes), Array(sent[10...]))
        // Past the end: nothing yet.
        guard case .nothing = try log.fetch(from: log.bounds().end, maxBytes: 1 << 16) else { return XCTFail("a fetch past the end found something") }
    }

    func testFlushCompletesAfterMessagesAreStored() throws {
        let log = try makePipe("jobs")
        let before = log.bounds().end
        let writer = try log.makeWriter()
        try push(writer, messages("m", 50))
        let done = expectation(description: "flush")
        let endAtFlush = LockedValue<Int64>(-1)
        writer.flush { error in
            XCTAssertNil(error)
            endAtFlush.withLock { $0 = log.bounds().end }
            done.fulfill()
        }
        wait(for: [done], timeout: patience)
        XCTAssertGreaterThanOrEqual(endAtFlush.withLock { $0 } - before, 50, "the flush completed before its messages were in the pipe")
        XCTAssertEqual(fetch(log, from: before, count: 50).map(\.bytes), messages("m", 50))
        // A flush with nothing pushed completes too.
        flush(try log.makeWriter())
    }

    func testObserversAreToldOfPushResetAndRemoval() throws {
        let log = try makePipe("jobs")
        let told = DispatchSemaphore(value: 0)
        // Set while a push runs on `pusher`: an observer called from within the push sees it.
        let pushing = LockedValue<Thread?>(nil)
        let calledWithinPush = LockedValue(false)
        let token = log.addObserver {
            if pushing.withLock({ $0 === Thread.current }) { calledWithinPush.withLock { $0 = true } }
            // The observer may call back into the log: no lock of it is held.
            _ = log.bounds()
            _ = try? log.fetch(from: 0, maxBytes: 1)
            told.signal()
        }
        let writer = try log.makeWriter()
        bounded("a push", seconds: patience) {
            pushing.withLock { $0 = Thread.current }
            try? writer.push([Array("one".utf8)])
            pushing.withLock { $0 = nil }
        }
        XCTAssertEqual(told.wait(timeout: .now() + patience), .success, "no notification after a push")
        XCTAssertFalse(calledWithinPush.withLock { $0 }, "an observer was called from within the push")
        flush(writer)
        drain(told)

        reset(log)
        XCTAssertEqual(told.wait(timeout: .now() + patience), .success, "no notification after a reset")
        drain(told)

        log.removeObserver(token)
        let afterRemoval = DispatchSemaphore(value: 0)
        let second = log.addObserver { afterRemoval.signal() }
        defer { log.removeObserver(second) }
        bounded("a push", seconds: patience) { try? writer.push([Array("two".utf8)]) }
        XCTAssertEqual(afterRemoval.wait(timeout: .now() + patience), .success, "no notification after a push")
        XCTAssertEqual(told.wait(timeout: .now() + 0.3), .timedOut, "a removed observer was still called")
        drain(afterRemoval)

        try store.remove(log.name)
        XCTAssertEqual(afterRemoval.wait(timeout: .now() + patience), .success, "no notification after the pipe was removed")
    }

    /// Takes notifications still on their way (a store may tell once per change or once per burst).
    private func drain(_ semaphore: DispatchSemaphore) {
        usleep(100_000)
        while semaphore.wait(timeout: .now()) == .success {}
    }

    func testResetMovesOldestToTheEndAndOffsetsKeepGrowing() throws {
        let log = try makePipe("jobs")
        try write(log, messages("old", 5))
        let old = fetch(log, from: log.bounds().oldest, count: 5)
        let endBefore = log.bounds().end
        XCTAssertGreaterThan(endBefore, log.bounds().oldest)

        reset(log)
        XCTAssertTrue(eventually(log) { log.bounds().oldest >= endBefore && log.bounds().oldest == log.bounds().end },
                      "after a reset the oldest offset is the end, at or past the old end: \(log.bounds()) (end was \(endBefore))")
        let oldOffsets: [Int64] = old.map(\.offset)
        for offset in [0] + oldOffsets {
            guard case .nothing = try log.fetch(from: offset, maxBytes: 1 << 16) else { return XCTFail("a message from before the reset at \(offset)") }
        }

        try write(log, messages("new", 3))
        let new = fetch(log, from: 0, count: 3)
        XCTAssertEqual(new.map(\.bytes), messages("new", 3), "a fetch from below the oldest offset starts at the oldest message")
        XCTAssertTrue(new.allSatisfy { $0.offset >= endBefore }, "offsets after a reset continue past the old ones: \(new.map(\.offset))")
        XCTAssertGreaterThan(log.bounds().end, endBefore)
    }

    func testRemovedPipeReportsRemoved() throws {
        let log = try makePipe("jobs")
        try write(log, messages("m", 3))
        _ = fetch(log, from: 0, count: 3)
        XCTAssertFalse(log.isRemoved)
        try store.remove(log.name)
        XCTAssertTrue(eventually(log) { log.isRemoved }, "an open log of a removed pipe reports isRemoved")
        guard case .removed = try log.fetch(from: 0, maxBytes: 1 << 16) else { return XCTFail("a fetch of a removed pipe") }
        XCTAssertEqual(log.readiness(partition: 0, from: 0), .removed)
        XCTAssertThrowsError(try log.makeWriter(), "a writer for a removed pipe")

        // A pipe made again under the name is another, empty pipe.
        let again = try makePipe("jobs")
        XCTAssertFalse(again.isRemoved)
        XCTAssertFalse(again === log)
        guard case .nothing = try again.fetch(from: 0, maxBytes: 1 << 16) else { return XCTFail("the old pipe's messages in the new one") }
    }

    func testStreamExtentCountsMessagesAndNewlines() throws {
        let log = try makePipe("jobs")
        guard log.streamExtent() != nil || store is CountsStreamLater else {
            throw XCTSkip("\(type(of: store!)) does not count stream bytes (streamExtent is nil)")
        }
        var rng = SplitMix64(seed: 12)
        let sent = (0..<200).map { i in Array("m\(i)-".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: Int(rng.next() % 40)) }
        try write(log, sent)
        let got = fetch(log, from: 0, count: sent.count)
        let framed = Int64(sent.reduce(0) { $0 + $1.count + 1 })
        XCTAssertTrue(eventually(log) { log.streamExtent()?.size == framed }, "size \(String(describing: log.streamExtent()?.size)), framed \(framed)")
        guard let extent = log.streamExtent(), got.count == sent.count else { return }
        XCTAssertEqual(extent.origin, log.bounds().oldest)
        XCTAssertEqual(extent.countedEnd, log.bounds().end)
        XCTAssertNotNil(extent.lastPush)

        // Every anchor names a message and the byte where it starts.
        var starts: [Int64: Int64] = [:]
        var byte: Int64 = 0
        for (offset, bytes) in got {
            starts[offset] = byte
            byte += Int64(bytes.count + 1)
        }
        for position in [0, 1, framed / 2, framed - 1] {
            guard let anchor = log.streamAnchor(atOrBefore: position) else { XCTFail("no anchor at \(position)"); continue }
            XCTAssertEqual(anchor.origin, extent.origin)
            XCTAssertEqual(starts[anchor.offset], anchor.byte, "anchor \(anchor) at \(position)")
            XCTAssertLessThanOrEqual(anchor.byte, position)
        }

        reset(log)
        XCTAssertTrue(eventually(log) { log.streamExtent().map { $0.size == 0 && $0.origin == log.bounds().oldest } ?? false },
                      "after a reset the stream starts again, empty, at the oldest offset: \(String(describing: log.streamExtent()))")
    }

    func testWritersNeverInterleaveWithinAPush() throws {
        let log = try makePipe("jobs")
        let batches = 40, size = 25
        let writers = try ["a", "b", "c"].map { ($0, try log.makeWriter()) }
        let group = DispatchGroup()
        let failures = LockedValue<[String]>([])
        for (tag, writer) in writers {
            DispatchQueue.global().async(group: group) {
                for b in 0..<batches {
                    let batch = (0..<size).map { Array("\(tag) \(b) \($0)".utf8) }
                    do { try writer.push(batch) } catch PipeError.full {
                        failures.withLock { $0.append("\(tag): full") }
                    } catch {
                        failures.withLock { $0.append("\(tag): \(error)") }
                    }
                }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + patience), .success, "the pushes did not finish")
        XCTAssertEqual(failures.withLock { $0 }, [])
        writers.forEach { flush($0.1) }

        let got = fetch(log, from: 0, count: writers.count * batches * size).map { String(decoding: $0.bytes, as: UTF8.self) }
        var i = 0
        var nextBatch: [String: Int] = [:]
        while i < got.count {
            let first = got[i].split(separator: " ")
            let tag = String(first[0]), b = Int(first[1])!
            XCTAssertEqual(b, nextBatch[tag, default: 0], "writer \(tag)'s batches out of order")
            nextBatch[tag] = b + 1
            let expected = (0..<size).map { "\(tag) \(b) \($0)" }
            XCTAssertEqual(Array(got[i..<min(i + size, got.count)]), expected, "a push interleaved with another at message \(i)")
            i += size
        }
    }

    func testReadinessAgreesWithFetch() throws {
        let log = try makePipe("jobs")
        func agree(_ when: String) throws {
            let bounds = log.bounds()
            for offset in Set([0, bounds.oldest - 1, bounds.oldest, bounds.oldest + 1, bounds.end - 1, bounds.end, bounds.end + 5]) where offset >= 0 {
                let ready = log.readiness(partition: 0, from: offset)
                switch try log.fetch(from: offset, maxBytes: 1) {
                case .messages(let batch): XCTAssertEqual(ready, .message(at: batch.offsets[0]), "\(when), from \(offset)")
                case .nothing: XCTAssertEqual(ready, .nothing, "\(when), from \(offset)")
                case .removed: XCTAssertEqual(ready, .removed, "\(when), from \(offset)")
                }
            }
        }
        try agree("empty")
        try write(log, messages("m", 10))
        _ = fetch(log, from: 0, count: 10)
        try agree("with messages")
        reset(log)
        XCTAssertTrue(eventually(log) { log.bounds().oldest == log.bounds().end })
        try agree("after a reset")
        try write(log, messages("n", 4))
        _ = fetch(log, from: 0, count: 4)
        try agree("after a reset and pushes")
        try store.remove(log.name)
        XCTAssertTrue(eventually(log) { log.isRemoved })
        try agree("removed")
    }
}

/// A store whose logs learn their stream's size once a reader streams them (Kafka): `streamExtent` may be
/// nil before that.
protocol CountsStreamLater {}
