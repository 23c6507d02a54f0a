import Foundation
import XCTest
@testable import DNPipesCore

/// A pipe of one partition in memory that counts byte positions as a backend does.
// @unchecked Sendable: used from the test's thread only.
private final class CountingLog: PipeLog, @unchecked Sendable {
    let name = try! PipeName(validating: "counted")
    var messages: [[UInt8]] = []
    var oldest: Int64 = 0
    var index = StreamIndex(origin: 0)
    var perFetch = 3
    var fetches = 0
    /// The next fetch fails (a corrupt record, a disk error).
    var failNext = false
    private let observers = Observers()

    func push(_ lines: [String]) {
        for line in lines {
            index.note(offset: oldest + Int64(messages.count), length: line.utf8.count)
            messages.append(Array(line.utf8))
        }
    }

    func bounds(partition: Int) -> (oldest: Int64, end: Int64) { (oldest, oldest + Int64(messages.count)) }
    var isRemoved: Bool { false }
    func fetch(partition: Int, from offset: Int64, maxBytes: Int) throws -> Fetched {
        fetches += 1
        if failNext { failNext = false; throw PipeError.io("corrupt record") }
        let first = max(offset, oldest)
        let end = oldest + Int64(messages.count)
        guard first < end else { return .nothing }
        let last = min(end, first + Int64(perFetch))
        return .messages(MessageBatch(first: first, messages: Array(messages[Int(first - oldest)..<Int(last - oldest)])))
    }
    func makeWriter() throws -> PipeWriter { fatalError("not used") }
    func reset(completion: @escaping @Sendable (Error?) -> Void) {
        oldest += Int64(messages.count)
        messages = []
        index.restart(at: oldest)
        completion(nil)
    }
    func addObserver(_ callback: @escaping @Sendable () -> Void) -> Int { observers.add(callback) }
    func removeObserver(_ token: Int) { observers.remove(token) }
    func streamExtent() -> StreamExtent? { index.extent(lastPush: nil) }
    func streamAnchor(atOrBefore byte: Int64) -> StreamAnchor? { index.anchor(atOrBefore: byte) }
}

/// Reads at file positions: the way bash, head and tail use a regular file.
final class PositionedReaderTests: XCTestCase {
    private func text(_ outcome: PipeReader.Outcome) -> String? {
        guard case .data(let bytes) = outcome else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func numbered(_ count: Int) -> [String] { (0..<count).map { String(format: "line%04d", $0) } }

    func testSizeCountsEveryMessageAndItsNewline() {
        let log = CountingLog()
        log.push(["ab", "", "cde"])
        XCTAssertEqual(log.streamExtent()?.size, 3 + 1 + 4)
        XCTAssertEqual(log.streamExtent()?.countedEnd, 3)
    }

    func testAnchorsLieAtOrBeforeThePositionAndAtMessageStarts() {
        var index = StreamIndex(origin: 10)
        for i in 0..<200 { index.note(offset: 10 + Int64(i), length: 9) }   // 10 bytes framed each
        XCTAssertEqual(index.anchor(atOrBefore: 0), StreamAnchor(origin: 10, offset: 10, byte: 0))
        XCTAssertEqual(index.anchor(atOrBefore: 639), StreamAnchor(origin: 10, offset: 10, byte: 0))
        XCTAssertEqual(index.anchor(atOrBefore: 640), StreamAnchor(origin: 10, offset: 74, byte: 640))
        XCTAssertEqual(index.anchor(atOrBefore: 1919), StreamAnchor(origin: 10, offset: 138, byte: 1280))
        XCTAssertEqual(index.anchor(atOrBefore: 1999), StreamAnchor(origin: 10, offset: 202, byte: 1920))
        // A refetch of counted offsets changes nothing; gaps are allowed.
        index.note(offset: 50, length: 100)
        XCTAssertEqual(index.size, 2000)
        index.note(offset: 300, length: 0)
        XCTAssertEqual(index.size, 2001)
        XCTAssertEqual(index.next, 301)
    }

    /// bash reads 4 KiB, uses one line and seeks back to just after it; every line must come once, in order.
    func testReadThenSeekBackLikeBashGivesEveryLineOnce() throws {
        let log = CountingLog()
        log.perFetch = 1000
        let lines = numbered(3000)
        log.push(lines)
        var reader = PositionedReader(log: log, start: .oldest, stopAtEnd: true)
        var position: Int64 = 0
        var got: [String] = []
        while true {
            guard let chunk = text(try reader.read(at: position, capacity: 4096)) else { break }
            let line = chunk.prefix { $0 != "\n" }
            got.append(String(line))
            position += Int64(line.utf8.count + 1)
        }
        XCTAssertEqual(got, lines)
        // The buffer serves hundreds of such reads per store fetch.
        XCTAssertLessThan(log.fetches, 3000 / 20)
    }

    func testReadAtAnyPositionStartsThere() throws {
        let log = CountingLog()
        let lines = numbered(500)
        log.push(lines)
        let all = lines.map { $0 + "\n" }.joined()
        var reader = PositionedReader(log: log, start: .oldest, stopAtEnd: false)
        for position in [0, 1, 9, 10, 641, 4000, 2999, 4499] {
            let want = String(all.dropFirst(position).prefix(25))
            XCTAssertEqual(text(try reader.read(at: Int64(position), capacity: 25)), want, "at \(position)")
        }
        // At the end: nothing yet (the read waits); past the end the same.
        XCTAssertEqual(try reader.read(at: Int64(all.utf8.count), capacity: 10), .nothing)
    }

    /// tail -n reads backwards from the size, then to the end.
    func testBackwardChunksFromTheSizeAsTailReadsThem() throws {
        let log = CountingLog()
        log.push(numbered(100))
        let size = log.streamExtent()!.size
        var reader = PositionedReader(log: log, start: .oldest, stopAtEnd: false)
        XCTAssertEqual(text(try reader.read(at: size - 27, capacity: 27)), "line0097\nline0098\nline0099\n")
        XCTAssertEqual(text(try reader.read(at: size - 54, capacity: 27)), "line0094\nline0095\nline0096\n")
    }

    func testTailViewPositionZeroIsTheEndAtOpen() throws {
        let log = CountingLog()
        log.push(["old"])
        var reader = PositionedReader(log: log, start: .end, stopAtEnd: false)
        XCTAssertEqual(try reader.read(at: 0, capacity: 100), .nothing)
        log.push(["new"])
        XCTAssertEqual(text(try reader.read(at: 0, capacity: 100)), "new\n")
    }

    /// After a reset a reader goes on at its file position with the new stream's first byte; a reader that
    /// noticed the truncation and went back to 0 (tail -F) reads the new stream from 0.
    func testResetContinuesAtTheFilePositionOrFromZero() throws {
        let log = CountingLog()
        log.push(["a", "b"])
        var follower = PositionedReader(log: log, start: .oldest, stopAtEnd: false)
        var rewinder = PositionedReader(log: log, start: .oldest, stopAtEnd: false)
        XCTAssertEqual(text(try follower.read(at: 0, capacity: 100)), "a\nb\n")
        XCTAssertEqual(text(try rewinder.read(at: 0, capacity: 100)), "a\nb\n")
        log.reset { _ in }
        log.push(["c"])
        XCTAssertEqual(log.streamExtent()?.size, 2)
        XCTAssertEqual(text(try follower.read(at: 4, capacity: 100)), "c\n")
        XCTAssertEqual(text(try follower.read(at: 5, capacity: 100)), "\n", "seeks within the new stream")
        XCTAssertEqual(text(try follower.read(at: 3, capacity: 100)), "c\n", "before it: the new stream's start")
        XCTAssertEqual(text(try rewinder.read(at: 0, capacity: 100)), "c\n")
    }

    func testDrainEndsAtItsEndEvenAfterSeeking() throws {
        let log = CountingLog()
        log.push(["1", "2"])
        var reader = PositionedReader(log: log, start: .oldest, stopAtEnd: true)
        log.push(["3"])
        XCTAssertEqual(text(try reader.read(at: 0, capacity: 100)), "1\n2\n")
        XCTAssertEqual(text(try reader.read(at: 2, capacity: 100)), "2\n")
        XCTAssertEqual(try reader.read(at: 4, capacity: 100), .endOfFile)
    }

    /// A fetch that fails leaves the reader as it was, in both read paths: the read reports the error and the
    /// next read at the same position gets the bytes.
    func testAFailedFetchChangesNothing() throws {
        let log = CountingLog()
        log.push(numbered(20))
        var reader = PositionedReader(log: log, start: .oldest, stopAtEnd: false)
        for capacity in [4096, 1 << 20] {
            // A small read leaves bytes 0 ..< 27 in the buffer; the failing read starts inside them.
            XCTAssertEqual(text(try reader.read(at: 0, capacity: 9)), "line0000\n")
            log.failNext = true
            XCTAssertThrowsError(try reader.read(at: 9, capacity: capacity))
            XCTAssertEqual(text(try reader.read(at: 9, capacity: 9)), "line0001\n")
            log.failNext = true
            XCTAssertThrowsError(try reader.read(at: 9 * 19, capacity: capacity))
            XCTAssertEqual(text(try reader.read(at: 9 * 19, capacity: capacity)), "line0019\n")
        }
    }

    func testPollSeesBytesBufferedForTheCaller() throws {
        let log = CountingLog()
        log.perFetch = 100
        log.push(numbered(50))
        var reader = PositionedReader(log: log, start: .oldest, stopAtEnd: false)
        XCTAssertEqual(text(try reader.read(at: 0, capacity: 9)), "line0000\n")
        XCTAssertTrue(reader.isReadable(), "bytes taken from the store but not yet read must count as readable")
    }
}
