import Foundation
import XCTest
import DNPipesTestSupport
import DNPipesCore
@testable import DNPipesEmbedded

/// `EmbeddedStore` and its logs: pipe lifecycle, append/flush/fetch, reset, reopen, the directory lock,
/// segment rolling and observers.
final class EmbeddedStoreTests: StoreTestCase {
    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func testCreateListContainsRemove() throws {
        let store = try makeStore()
        defer { store.shutdown() }
        XCTAssertEqual(try store.list(), [])
        XCTAssertFalse(store.contains(name("b")))
        XCTAssertTrue(try store.create(name("b")))
        XCTAssertTrue(try store.create(name("a")))
        XCTAssertFalse(try store.create(name("a")), "creating an existing pipe returns false")
        XCTAssertEqual(try store.list(), [name("a"), name("b")])
        XCTAssertTrue(store.contains(name("a")))
        XCTAssertTrue(FileManager.default.fileExists(atPath: data + "/pipes/a"))
        XCTAssertNil(try store.open(name("nope")))

        try store.remove(name("a"))
        XCTAssertFalse(store.contains(name("a")))
        XCTAssertEqual(try store.list(), [name("b")])
        XCTAssertFalse(FileManager.default.fileExists(atPath: data + "/pipes/a"))
        XCTAssertNil(try store.open(name("a")))
        XCTAssertThrowsError(try store.remove(name("a"))) {
            XCTAssertEqual($0 as? PipeError, .noSuchPipe(name("a")))
        }
    }

    /// The pipe list survives a restart, and a recreated pipe starts empty.
    /// What poll asks at every push: answered from the log's bounds, without reading a record, and the same
    /// as what a fetch would find.
    func testReadinessAnswersWithoutReadingAndAgreesWithFetch() throws {
        let store = try makeStore()
        defer { store.shutdown() }
        try store.create(name("p"))
        let log = try XCTUnwrap(store.open(name("p")))
        XCTAssertEqual(log.readiness(partition: 0, from: 0), .nothing)
        try log.makeWriter().push([bytes("a"), bytes("b")])
        XCTAssertEqual(log.readiness(partition: 0, from: 0), .message(at: 0))
        XCTAssertEqual(log.readiness(partition: 0, from: 1), .message(at: 1))
        XCTAssertEqual(log.readiness(partition: 0, from: 2), .nothing)
        XCTAssertNil(awaitCompletion { log.reset(completion: $0) })
        XCTAssertEqual(log.readiness(partition: 0, from: 0), .nothing, "a reset moves the start past everything")
        try log.makeWriter().push([bytes("c")])
        XCTAssertEqual(log.readiness(partition: 0, from: 0), .message(at: 2))
        guard case .messages(let batch) = try log.fetch(from: 0, maxBytes: 10) else { return XCTFail("no fetch") }
        XCTAssertEqual(batch.offsets, [2])
        // Made unreadable underneath (the segment file emptied): readiness still answers from the bounds,
        // which shows it reads nothing.
        let segment = data + "/pipes/p/" + Segment.fileName(base: 2)
        XCTAssertEqual(truncate(segment, 0), 0)
        XCTAssertEqual(log.readiness(partition: 0, from: 0), .message(at: 2))
        try store.remove(name("p"))
        XCTAssertEqual(log.readiness(partition: 0, from: 0), .removed)
    }

    /// A failure to list or open a file names it and says the errno in words (Foundation's listing said
    /// only "NSCocoaErrorDomain Code=256").
    func testSystemErrorsNameTheFileAndTheErrno() throws {
        XCTAssertThrowsError(try directoryEntries(data + "/none")) {
            XCTAssertEqual("\($0)", "open directory \(data)/none: No such file or directory")
        }
        XCTAssertThrowsError(try systemCall("open \(data)/none") { open(data + "/none", O_RDONLY) }) {
            XCTAssertEqual("\($0)", "open \(data)/none: No such file or directory")
        }
        try FileManager.default.createDirectory(atPath: data + "/d", withIntermediateDirectories: true)
        XCTAssertTrue(FileManager.default.createFile(atPath: data + "/d/a", contents: nil))
        XCTAssertEqual(try directoryEntries(data + "/d"), ["a"])
    }

    func testPipesSurviveReopenAndRecreatedPipeIsEmpty() throws {
        try withStore { store in
            try store.create(name("keep"))
            try store.create(name("gone"))
            try write(try openLog(store, "gone"), [bytes("old")])
            try store.remove(name("gone"))
            XCTAssertTrue(try store.create(name("gone")))
            let log = try openLog(store, "gone")
            XCTAssertEqual(log.bounds().oldest, 0)
            XCTAssertEqual(log.bounds().end, 0)
            XCTAssertEqual(try readAll(log).messages, [])
        }
        try withStore { store in
            XCTAssertEqual(try store.list(), [name("gone"), name("keep")])
        }
    }

    /// Messages pushed come back from offset 0 and from any offset, also far past the sparse index stride.
    func testAppendFlushFetch() throws {
        var rng = SplitMix64(seed: 11)
        let messages = [[]] + randomMessages(64 * 3 + 70, maxLength: 50, using: &rng)
        let store = try makeStore()
        defer { store.shutdown() }
        try store.create(name("p"))
        let log = try openLog(store, "p")
        XCTAssertTrue(try store.open(name("p")) === log, "open returns the same log while it is open")
        try write(log, messages)
        XCTAssertEqual(log.bounds().oldest, 0)
        XCTAssertEqual(log.bounds().end, Int64(messages.count))

        let all = try readAll(log)
        XCTAssertEqual(all.first, 0)
        XCTAssertEqual(all.messages, messages)
        for offset in [1, 63, 64, 65, 127, 128, 200, 255, messages.count - 1] {
            let rest = try readAll(log, from: Int64(offset))
            XCTAssertEqual(rest.first, Int64(offset))
            XCTAssertEqual(rest.messages, Array(messages[offset...]), "from \(offset)")
        }
        guard case .nothing = try log.fetch(from: Int64(messages.count), maxBytes: 100) else {
            return XCTFail("fetch at the end should find nothing")
        }
    }

    /// A small `maxBytes` still returns one message (and not more than fit), and reading one at a time works.
    func testFetchWithSmallMaxBytes() throws {
        let messages = (0..<200).map { bytes("message number \($0)") }
        let store = try makeStore()
        defer { store.shutdown() }
        try store.create(name("p"))
        let log = try openLog(store, "p")
        try write(log, messages)
        for maxBytes in [0, 1, 5] {
            guard case .messages(let batch) = try log.fetch(from: 150, maxBytes: maxBytes) else {
                return XCTFail("no messages with maxBytes \(maxBytes)")
            }
            XCTAssertEqual(batch.offsets, [150])
            XCTAssertEqual(batch.messages, [messages[150]])
        }
        XCTAssertEqual(try readAll(log, maxBytes: 1).messages, messages)
        XCTAssertEqual(try readAll(log, from: 70, maxBytes: 40).messages, Array(messages[70...]))
    }

    /// A batch with a message over the limit is refused whole; nothing of it is stored.
    func testTooLargeMessageRefusesTheBatch() throws {
        let store = try makeStore(EmbeddedStore.Configuration(maxMessageBytes: 10))
        defer { store.shutdown() }
        try store.create(name("p"))
        let log = try openLog(store, "p")
        let writer = try log.makeWriter()
        try writer.push([bytes("0123456789")])
        XCTAssertThrowsError(try writer.push([bytes("ok"), bytes("0123456789A")])) {
            XCTAssertEqual($0 as? PipeError, .messageTooLarge(size: 11, limit: 10))
        }
        flush(writer)
        XCTAssertEqual(log.bounds().end, 1)
        XCTAssertEqual(try readAll(log).messages, [bytes("0123456789")])
    }

    /// After a reset completes, nothing pushed before it is readable, offsets keep growing, and new pushes
    /// are readable from any old offset.
    func testReset() throws {
        let store = try makeStore()
        defer { store.shutdown() }
        try store.create(name("p"))
        let log = try openLog(store, "p")
        try write(log, (0..<100).map { bytes("m\($0)") })
        reset(log)
        XCTAssertEqual(log.bounds().oldest, 100)
        XCTAssertEqual(log.bounds().end, 100)
        for offset: Int64 in [0, 50, 99, 100] {
            guard case .nothing = try log.fetch(from: offset, maxBytes: 1000) else {
                return XCTFail("messages after reset from \(offset)")
            }
        }
        try write(log, [bytes("after")])
        let all = try readAll(log, from: 3)
        XCTAssertEqual(all.first, 100)
        XCTAssertEqual(all.messages, [bytes("after")])
        // A reset of an already empty pipe changes nothing.
        reset(log)
        reset(log)
        XCTAssertEqual(log.bounds().oldest, 101)
        XCTAssertEqual(log.bounds().end, 101)
        try write(log, [bytes("later")])
        XCTAssertEqual(try readAll(log).first, 101)
    }

    /// Messages and the reset point survive shutting the store down and opening the directory again.
    func testReopenKeepsMessagesAndResetState() throws {
        let before = (0..<30).map { bytes("before \($0)") }
        let after = (0..<5).map { bytes("after \($0)") }
        try withStore { store in
            try store.create(name("kept"))
            try store.create(name("reset"))
            try write(try openLog(store, "kept"), before)
            let log = try openLog(store, "reset")
            try write(log, before)
            reset(log)
            try write(log, after)
        }
        try withStore { store in
            let kept = try openLog(store, "kept")
            XCTAssertEqual(kept.bounds().oldest, 0)
            XCTAssertEqual(kept.bounds().end, 30)
            XCTAssertEqual(try readAll(kept).messages, before)

            let log = try openLog(store, "reset")
            XCTAssertEqual(log.bounds().oldest, 30)
            XCTAssertEqual(log.bounds().end, 35)
            let all = try readAll(log)
            XCTAssertEqual(all.first, 30)
            XCTAssertEqual(all.messages, after)
            reset(log)
        }
        try withStore { store in
            let log = try openLog(store, "reset")
            XCTAssertEqual(log.bounds().oldest, 35)
            XCTAssertEqual(log.bounds().end, 35)
            guard case .nothing = try log.fetch(from: 0, maxBytes: 100) else { return XCTFail("messages after reset") }
            try write(log, [bytes("x")])
            XCTAssertEqual(try readAll(log).first, 35)
        }
    }

    /// One data directory, one store: a second one is refused while the first is alive.
    func testSecondStoreOnSameDirectoryIsRefused() throws {
        var first: EmbeddedStore? = try makeStore()
        XCTAssertThrowsError(try makeStore()) { error in
            guard let served = error as? EmbeddedStore.AlreadyServed else { return XCTFail("unexpected \(error)") }
            XCTAssertEqual(served.directory, self.data)
            XCTAssertEqual(served.owner, String(getpid()))
        }
        first?.shutdown()
        first = nil
        XCTAssertNoThrow(try makeStore().shutdown())
    }

    /// With small segments the log rolls over many files; reads cross segment boundaries from every offset,
    /// and a reset deletes the old segment files.
    func testSegmentsRollAndResetDeletesThem() throws {
        var rng = SplitMix64(seed: 5)
        let messages = randomMessages(120, maxLength: 80, using: &rng)
        let config = EmbeddedStore.Configuration(segmentBytes: 1024)
        try withStore(config) { store in
            try store.create(name("p"))
            let log = try openLog(store, "p")
            try write(log, messages, batch: 3)
            let files = try segmentFiles("p")
            XCTAssertGreaterThan(files.count, 3)
            XCTAssertEqual(files.first?.base, 0)
            for file in files.dropLast() {
                // A segment is closed once it reaches the limit, so it is at most one batch past it.
                XCTAssertGreaterThanOrEqual(try fileSize(file.path), 1024)
            }
            for offset in 0..<messages.count {
                let rest = try readAll(log, from: Int64(offset), maxBytes: 300)
                XCTAssertEqual(rest.messages, Array(messages[offset...]), "from \(offset)")
            }
            reset(log)
            let left = try segmentFiles("p")
            XCTAssertEqual(left.map(\.base), [Int64(messages.count)])
            try write(log, [bytes("fresh")])
            XCTAssertEqual(try readAll(log).messages, [bytes("fresh")])
        }
        try withStore(config) { store in
            let log = try openLog(store, "p")
            XCTAssertEqual(try readAll(log).messages, [bytes("fresh")])
            XCTAssertEqual(log.bounds().oldest, Int64(messages.count))
        }
    }

    /// Observers are told about pushes, resets and removal, and not after they are removed.
    func testObservers() throws {
        let store = try makeStore()
        defer { store.shutdown() }
        try store.create(name("p"))
        let log = try openLog(store, "p")
        let counter = Counter()
        let pushed = expectation(description: "observer after push")
        let token = log.addObserver {
            counter.increment()
            if counter.value == 1 { pushed.fulfill() }
        }
        let writer = try log.makeWriter()
        try writer.push([bytes("hello")])
        wait(for: [pushed], timeout: 5)

        let notifiedReset = expectation(description: "observer after reset")
        let resetToken = log.addObserver { if log.bounds().oldest == 1 { notifiedReset.fulfill() } }
        reset(log)
        wait(for: [notifiedReset], timeout: 5)
        log.removeObserver(resetToken)

        log.removeObserver(token)
        let seen = counter.value
        try writer.push([bytes("unobserved")])
        XCTAssertEqual(counter.value, seen)

        let removed = expectation(description: "observer after remove")
        _ = log.addObserver { if log.isRemoved { removed.fulfill() } }
        try store.remove(name("p"))
        wait(for: [removed], timeout: 5)
    }

    /// A removed pipe's open log reports removal to readers and refuses writers.
    func testRemovedPipeLog() throws {
        let store = try makeStore()
        defer { store.shutdown() }
        try store.create(name("p"))
        let log = try openLog(store, "p")
        let writer = try log.makeWriter()
        try writer.push([bytes("a")])
        try store.remove(name("p"))
        XCTAssertTrue(log.isRemoved)
        guard case .removed = try log.fetch(from: 0, maxBytes: 100) else { return XCTFail("fetch should report removal") }
        XCTAssertThrowsError(try log.makeWriter()) { XCTAssertEqual($0 as? PipeError, .removed(name("p"))) }
        XCTAssertThrowsError(try writer.push([bytes("b")])) { XCTAssertEqual($0 as? PipeError, .removed(name("p"))) }
        let done = expectation(description: "reset of a removed pipe")
        log.reset { error in
            XCTAssertEqual(error as? PipeError, .removed(try! PipeName(validating: "p")))
            done.fulfill()
        }
        wait(for: [done], timeout: 5)
    }

    /// Writers on several threads: every message is stored once and each writer's messages keep their order.
    func testConcurrentWriters() throws {
        let store = try makeStore(EmbeddedStore.Configuration(segmentBytes: 4096))
        defer { store.shutdown() }
        try store.create(name("p"))
        let log = try openLog(store, "p")
        let writers = 4, perWriter = 150
        DispatchQueue.concurrentPerform(iterations: writers) { w in
            let writer = try! log.makeWriter()
            for i in 0..<perWriter { try! writer.push([Array("w\(w) \(i)".utf8)]) }
            let group = DispatchGroup()
            group.enter()
            writer.flush { error in XCTAssertNil(error); group.leave() }
            group.wait()
        }
        let all = try readAll(log).messages.map { String(decoding: $0, as: UTF8.self) }
        XCTAssertEqual(all.count, writers * perWriter)
        for w in 0..<writers {
            XCTAssertEqual(all.filter { $0.hasPrefix("w\(w) ") }, (0..<perWriter).map { "w\(w) \($0)" })
        }
    }
}
