import XCTest
import DNPipesTestSupport
@testable import DNPipesCore

/// A fake pipe for `ReadCursor.fill`: messages at offsets `oldest ..< oldest + messages.count`, fetched like a
/// store does (from at least the oldest offset, about `maxBytes` but at least one message).
private struct FakePipe {
    var oldest: Int64 = 0
    var messages: [[UInt8]]
    var fetches: [(from: Int64, maxBytes: Int)] = []
    /// Whether fetches hand out framed blocks, as the embedded store does: each message with its newline in
    /// the buffer, with other bytes (a batch header) between some of them.
    var framed = false

    var end: Int64 { oldest + Int64(messages.count) }

    mutating func fetch(_ from: Int64, _ maxBytes: Int) -> MessageBatch? {
        fetches.append((from, maxBytes))
        let first = max(from, oldest)
        guard first < end else { return nil }
        var out: [[UInt8]] = []
        var bytes = 0
        var i = Int(first - oldest)
        while i < messages.count && (out.isEmpty || bytes < maxBytes) {
            out.append(messages[i])
            bytes += messages[i].count + 1
            i += 1
        }
        guard framed else { return MessageBatch(first: first, messages: out) }
        var buffer: [UInt8] = [0xEE, 0xEE]
        var ranges: [Range<Int>] = []
        for (k, message) in out.enumerated() {
            if (Int(first) + k) % 3 == 0 { buffer += [0xEE, 0xEE, 0xEE] }
            ranges.append(buffer.count..<(buffer.count + message.count))
            buffer += message + [0x0A]
        }
        return MessageBatch(first: first, block: MessageBlock(framedIn: buffer, ranges: ranges))
    }
}

/// `ReadCursor`: messages come out each followed by a newline, a message larger than the buffer continues on
/// the next fill, and the offset follows what was handed out.
final class ReadCursorTests: XCTestCase {
    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func testMessagesComeOutWithNewlines() {
        var pipe = FakePipe(messages: [bytes("a"), bytes("bc"), []])
        var cursor = ReadCursor(offset: 0)
        XCTAssertEqual(cursor.fill(capacity: 100) { pipe.fetch($0, $1) }, bytes("a\nbc\n\n"))
        XCTAssertEqual(cursor.offset, 3)
        XCTAssertFalse(cursor.hasCarry)
        XCTAssertEqual(pipe.fetches.first?.from, 0)
        XCTAssertEqual(pipe.fetches.first?.maxBytes, 100)
        XCTAssertEqual(cursor.fill(capacity: 100) { pipe.fetch($0, $1) }, [])
        XCTAssertEqual(cursor.offset, 3)
    }

    /// A message of exactly the capacity minus one fits with its newline; nothing is carried.
    func testExactFit() {
        var pipe = FakePipe(messages: [bytes("ab"), bytes("c")])
        var cursor = ReadCursor(offset: 0)
        XCTAssertEqual(cursor.fill(capacity: 3) { pipe.fetch($0, $1) }, bytes("ab\n"))
        XCTAssertFalse(cursor.hasCarry)
        XCTAssertEqual(cursor.offset, 1)
        XCTAssertEqual(cursor.fill(capacity: 3) { pipe.fetch($0, $1) }, bytes("c\n"))
        XCTAssertEqual(cursor.offset, 2)
    }

    /// A message larger than the buffer continues on the next fills; the offset moves past it at once and the
    /// following message is fetched only after the carry is out.
    func testLargeMessageIsCarried() {
        var pipe = FakePipe(messages: [bytes("hello"), bytes("x")])
        var cursor = ReadCursor(offset: 0)
        XCTAssertEqual(cursor.fill(capacity: 3) { pipe.fetch($0, $1) }, bytes("hel"))
        XCTAssertTrue(cursor.hasCarry)
        XCTAssertEqual(cursor.offset, 1)
        let fetchesBefore = pipe.fetches.count
        XCTAssertEqual(cursor.fill(capacity: 3) { pipe.fetch($0, $1) }, bytes("lo\n"))
        XCTAssertEqual(pipe.fetches.count, fetchesBefore, "a full buffer from the carry needs no fetch")
        XCTAssertFalse(cursor.hasCarry)
        XCTAssertEqual(cursor.fill(capacity: 3) { pipe.fetch($0, $1) }, bytes("x\n"))
        XCTAssertEqual(cursor.offset, 2)
    }

    /// Only the newline is left over when the message exactly fills the buffer.
    func testCarryOfJustTheNewline() {
        var pipe = FakePipe(messages: [bytes("abc"), bytes("d")])
        var cursor = ReadCursor(offset: 0)
        XCTAssertEqual(cursor.fill(capacity: 3) { pipe.fetch($0, $1) }, bytes("abc"))
        XCTAssertTrue(cursor.hasCarry)
        XCTAssertEqual(cursor.fill(capacity: 10) { pipe.fetch($0, $1) }, bytes("\nd\n"))
        XCTAssertEqual(pipe.fetches.last?.from, 1)
        XCTAssertEqual(pipe.fetches.last?.maxBytes, 9, "fetch is asked for the room left after the carry")
        XCTAssertEqual(cursor.offset, 2)
    }

    /// The carry comes out even when there is nothing more to fetch.
    func testCarryWithoutMoreMessages() {
        var pipe = FakePipe(messages: [bytes("abcdef")])
        var cursor = ReadCursor(offset: 0)
        XCTAssertEqual(cursor.fill(capacity: 4) { pipe.fetch($0, $1) }, bytes("abcd"))
        XCTAssertEqual(cursor.fill(capacity: 4) { pipe.fetch($0, $1) }, bytes("ef\n"))
        XCTAssertEqual(cursor.fill(capacity: 4) { pipe.fetch($0, $1) }, [])
        XCTAssertEqual(cursor.offset, 1)
    }

    /// After a reset the store answers from a later offset, and the cursor jumps there.
    func testJumpsWhenFetchStartsPastTheOffsetAsked() {
        var pipe = FakePipe(oldest: 10, messages: [bytes("m10"), bytes("m11")])
        var cursor = ReadCursor(offset: 2)
        XCTAssertEqual(cursor.fill(capacity: 100) { pipe.fetch($0, $1) }, bytes("m10\nm11\n"))
        XCTAssertEqual(pipe.fetches.first?.from, 2)
        XCTAssertEqual(cursor.offset, 12)
    }

    func testNilOrEmptyFetchGivesEmptyOutput() {
        var cursor = ReadCursor(offset: 5)
        XCTAssertEqual(cursor.fill(capacity: 10) { _, _ in nil }, [])
        XCTAssertEqual(cursor.offset, 5)
        XCTAssertEqual(cursor.fill(capacity: 10) { _, _ in MessageBatch(first: 9, messages: []) }, [])
        XCTAssertEqual(cursor.offset, 5, "an empty batch does not move the cursor")
    }

    /// Offsets with gaps (Kafka control records, reset markers): the cursor continues after the last message
    /// it delivered, also when that message only partly fit.
    func testOffsetsWithGapsMoveTheCursorPastTheLastDeliveredMessage() {
        var cursor = ReadCursor(offset: 0)
        let batch = MessageBatch(offsets: [3, 7, 20], messages: [bytes("a"), bytes("bcdef"), bytes("g")])
        XCTAssertEqual(cursor.fill(capacity: 4) { _, _ in batch }, bytes("a\nbc"))
        XCTAssertEqual(cursor.offset, 8, "the partly delivered message at 7 is done once its carry is out")
        XCTAssertEqual(cursor.fill(capacity: 10) { from, _ in
            XCTAssertEqual(from, 8)
            return MessageBatch(offsets: [20], messages: [bytes("g")])
        }, bytes("def\ng\n"))
        XCTAssertEqual(cursor.offset, 21)
    }

    func testFetchErrorsPropagate() {
        struct Boom: Error {}
        var cursor = ReadCursor(offset: 0)
        XCTAssertThrowsError(try cursor.fill(capacity: 10) { _, _ in throw Boom() }) { XCTAssertTrue($0 is Boom) }
        XCTAssertEqual(cursor.offset, 0)
    }

    func testSeekDropsCarry() {
        var pipe = FakePipe(messages: [bytes("abcdef"), bytes("g")])
        var cursor = ReadCursor(offset: 0)
        _ = cursor.fill(capacity: 2) { pipe.fetch($0, $1) }
        XCTAssertTrue(cursor.hasCarry)
        cursor.seek(to: 1)
        XCTAssertFalse(cursor.hasCarry)
        XCTAssertEqual(cursor.fill(capacity: 10) { pipe.fetch($0, $1) }, bytes("g\n"))
    }

    /// Fills in random buffer sizes until a fill is empty, checking none exceeds its capacity; nil (after a
    /// failure) if the cursor makes no progress.
    private func drain(_ cursor: inout ReadCursor, _ pipe: inout FakePipe, using rng: inout SplitMix64) -> [UInt8]? {
        var out: [UInt8] = []
        for _ in 0..<10_000 {
            let capacity = Int.random(in: 1...40, using: &rng)
            let chunk = cursor.fill(capacity: capacity) { pipe.fetch($0, $1) }
            XCTAssertLessThanOrEqual(chunk.count, capacity)
            if chunk.isEmpty { return out }
            out += chunk
        }
        XCTFail("no progress")
        return nil
    }

    /// Property: for random messages and random buffer sizes, the concatenated output of fills until an empty
    /// one is every message followed by a newline, and no fill exceeds its capacity.
    func testRandomCapacitiesReassembleTheStream() {
        var rng = SplitMix64(seed: 0xC0FFEE)
        for iteration in 0..<300 {
            let messages: [[UInt8]] = (0..<Int.random(in: 0...15, using: &rng)).map { _ in
                (0..<Int.random(in: 0...30, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
            let oldest = Int64.random(in: 0...5, using: &rng)
            var pipe = FakePipe(oldest: oldest, messages: messages)
            var cursor = ReadCursor(offset: 0)
            guard let out = drain(&cursor, &pipe, using: &rng) else { return }
            let expected: [UInt8] = messages.flatMap { $0 + [0x0A] }
            XCTAssertEqual(out, expected, "iteration \(iteration)")
            XCTAssertEqual(cursor.offset, messages.isEmpty ? 0 : pipe.end)
            XCTAssertFalse(cursor.hasCarry)
            if out != expected { return }
        }
    }

    /// Property: framed blocks (as the embedded store hands out, copied a run of messages at a time) give the
    /// same bytes as blocks of separate messages, for random buffer sizes and from random positions.
    func testFramedBlocksGiveTheSameStream() {
        var rng = SplitMix64(seed: 0xF4A3ED)
        for iteration in 0..<300 {
            let messages: [[UInt8]] = (0..<Int.random(in: 1...15, using: &rng)).map { _ in
                (0..<Int.random(in: 0...30, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
            let stream: [UInt8] = messages.flatMap { $0 + [0x0A] }
            let skip = Int.random(in: 0...stream.count, using: &rng)
            var pipe = FakePipe(messages: messages, framed: true)
            var cursor = ReadCursor(offset: 0)
            cursor.seek(to: 0, skip: Int64(skip))
            guard let out = drain(&cursor, &pipe, using: &rng) else { return }
            XCTAssertEqual(out, Array(stream[skip...]), "iteration \(iteration), from byte \(skip)")
            XCTAssertEqual(cursor.offset, pipe.end)
            if out != Array(stream[skip...]) { return }
        }
    }
}
