import XCTest
import DNPipesTestSupport
@testable import DNPipesCore

/// `LineFramer`: each complete line is one message without its newline, a partial line waits in `pending`,
/// and a write with an over-limit line is refused as a whole.
final class LineFramerTests: XCTestCase {
    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func testCompleteLinesBecomeMessages() throws {
        var f = LineFramer(maxMessageBytes: 100)
        XCTAssertEqual(try f.frame(bytes("a\nbc\n")), [bytes("a"), bytes("bc")])
        XCTAssertEqual(f.pending, [])
        XCTAssertNil(f.finish())
    }

    func testPartialLineWaitsUntilNewline() throws {
        var f = LineFramer(maxMessageBytes: 100)
        XCTAssertEqual(try f.frame(bytes("ab")), [])
        XCTAssertEqual(f.pending, bytes("ab"))
        XCTAssertEqual(try f.frame(bytes("c")), [])
        XCTAssertEqual(f.pending, bytes("abc"))
        XCTAssertEqual(try f.frame(bytes("d\ne\nfg")), [bytes("abcd"), bytes("e")])
        XCTAssertEqual(f.pending, bytes("fg"))
    }

    func testFinishReturnsPartialLineOnce() throws {
        var f = LineFramer(maxMessageBytes: 100)
        XCTAssertNil(f.finish())
        _ = try f.frame(bytes("x\ntail"))
        XCTAssertEqual(f.finish(), bytes("tail"))
        XCTAssertEqual(f.pending, [])
        XCTAssertNil(f.finish())
        // After finish, the next write starts a new message.
        XCTAssertEqual(try f.frame(bytes("next\n")), [bytes("next")])
    }

    func testEmptyLinesAreEmptyMessages() throws {
        var f = LineFramer(maxMessageBytes: 100)
        XCTAssertEqual(try f.frame(bytes("\n\n")), [[], []])
        XCTAssertEqual(try f.frame(bytes("a\n\nb\n")), [bytes("a"), [], bytes("b")])
        XCTAssertEqual(try f.frame([]), [])
        XCTAssertEqual(f.pending, [])
    }

    func testBinaryBytesPassThrough() throws {
        var f = LineFramer(maxMessageBytes: 100)
        XCTAssertEqual(try f.frame([0, 0xFF, 0x0D, 0x0A, 0x80, 0]), [[0, 0xFF, 0x0D]])
        XCTAssertEqual(f.pending, [0x80, 0])
    }

    /// A buffer taken from the middle of a larger one frames the same as an array of the same bytes.
    func testBufferInsideALargerOne() throws {
        let whole = bytes("garbage|ab\ncd\nef")
        var f = LineFramer(maxMessageBytes: 100)
        let block = try whole.withUnsafeBytes { try f.frame(UnsafeRawBufferPointer(rebasing: $0[8...])) }
        XCTAssertEqual(block.messages, [bytes("ab"), bytes("cd")])
        XCTAssertEqual(block.count, 2)
        XCTAssertEqual(f.pending, bytes("ef"))
        let none = try whole.withUnsafeBytes { try f.frame(UnsafeRawBufferPointer(rebasing: $0[8..<9])) }
        XCTAssertTrue(none.isEmpty)
        XCTAssertEqual(f.pending, bytes("efa"))
    }

    /// The pending start of a line and the rest of the write share one buffer; ranges leave out newlines.
    func testBlockLayout() throws {
        var f = LineFramer(maxMessageBytes: 100)
        _ = try f.frame(bytes("ab"))
        let block = try bytes("c\n\nde\nf").withUnsafeBytes { try f.frame($0) }
        XCTAssertEqual(block.messages, [bytes("abc"), [], bytes("de")])
        XCTAssertEqual(block.ranges, [0..<3, 4..<4, 5..<7])
        XCTAssertEqual(block.payloadBytes, 5)
        XCTAssertEqual(block.largest, 3)
        XCTAssertEqual(f.pending, bytes("f"))
    }

    /// A line of exactly the limit is accepted, complete or pending; one byte more is refused.
    func testLimitIsInclusive() throws {
        var f = LineFramer(maxMessageBytes: 4)
        XCTAssertEqual(try f.frame(bytes("abcd\n")), [bytes("abcd")])
        XCTAssertEqual(try f.frame(bytes("wxyz")), [])
        XCTAssertEqual(f.pending, bytes("wxyz"))
        XCTAssertEqual(try f.frame(bytes("\n")), [bytes("wxyz")])

        XCTAssertThrowsError(try f.frame(bytes("abcde\n"))) { error in
            XCTAssertEqual(error as? LineFramer.MessageTooLarge, LineFramer.MessageTooLarge(size: 5, limit: 4))
        }
        XCTAssertThrowsError(try f.frame(bytes("abcde"))) { error in
            XCTAssertEqual(error as? LineFramer.MessageTooLarge, LineFramer.MessageTooLarge(size: 5, limit: 4))
        }
        XCTAssertEqual(f.pending, [])
    }

    /// A refused write changes nothing: lines before the long one in the same write are not returned, and
    /// the pending bytes stay exactly as before.
    func testRefusedWriteLeavesStateUnchanged() throws {
        var f = LineFramer(maxMessageBytes: 4)
        _ = try f.frame(bytes("ab"))
        XCTAssertThrowsError(try f.frame(bytes("c\nok\ntoolong\n")))
        XCTAssertEqual(f.pending, bytes("ab"))
        XCTAssertThrowsError(try f.frame(bytes("\nfine\n12345")))  // over-limit tail
        XCTAssertEqual(f.pending, bytes("ab"))
        XCTAssertEqual(try f.frame(bytes("d\n")), [bytes("abd")])
        XCTAssertEqual(f.pending, [])
    }

    /// After a refusal, `abandon` drops what is held of the refused line and refuses its rest up to and
    /// including the write that carries its newline; then framing goes on as usual.
    func testAbandonedLineIsRefusedUntilItsNewline() throws {
        var f = LineFramer(maxMessageBytes: 4)
        XCTAssertEqual(try f.frame(bytes("abc")), [])
        do {
            _ = try f.frame(bytes("defg"))
            XCTFail("too long")
        } catch let refused as LineFramer.MessageTooLarge {
            XCTAssertTrue(refused.includesPending && refused.continues)
            f.abandon(refused)
        }
        XCTAssertEqual(f.pending, [])
        XCTAssertThrowsError(try f.frame(bytes("hij")))
        XCTAssertThrowsError(try f.frame(bytes("k\nxy")))
        XCTAssertEqual(try f.frame(bytes("ok\n")), [bytes("ok")])
        XCTAssertNil(f.finish())
    }

    /// The limit counts bytes carried from earlier writes, both for a completed line and for a pending tail.
    func testLimitCountsCarriedBytes() throws {
        var f = LineFramer(maxMessageBytes: 4)
        _ = try f.frame(bytes("abc"))
        XCTAssertThrowsError(try f.frame(bytes("de\n"))) { error in
            XCTAssertEqual(error as? LineFramer.MessageTooLarge, LineFramer.MessageTooLarge(size: 5, limit: 4))
        }
        XCTAssertEqual(f.pending, bytes("abc"))
        XCTAssertThrowsError(try f.frame(bytes("de"))) { error in
            XCTAssertEqual(error as? LineFramer.MessageTooLarge, LineFramer.MessageTooLarge(size: 5, limit: 4))
        }
        XCTAssertEqual(f.pending, bytes("abc"))
        // Carried bytes only count for the first line: the second line of the write starts fresh.
        XCTAssertEqual(try f.frame(bytes("d\nwxyz\n")), [bytes("abcd"), bytes("wxyz")])
    }

    /// Property: random messages (any byte but '\n', NULs and binary included) joined with '\n', cut into random
    /// chunks at random points and framed chunk by chunk, then finished, give back exactly the messages.
    func testRandomChunkingRoundTrip() throws {
        var rng = SplitMix64(seed: 0xF7A3E)
        for iteration in 0..<400 {
            let count = Int.random(in: 0...12, using: &rng)
            let messages: [[UInt8]] = (0..<count).map { _ in
                let length = Int.random(in: 0...(Bool.random(using: &rng) ? 3 : 40), using: &rng)
                return (0..<length).map { _ in
                    var b: UInt8
                    repeat { b = Bool.random(using: &rng) ? 0 : UInt8.random(in: 0...255, using: &rng) } while b == 0x0A
                    return b
                }
            }
            var stream = Array(messages.joined(separator: [0x0A]))
            // The last message is ended either by finish() or by a trailing newline.
            let trailingNewline = Bool.random(using: &rng)
            if trailingNewline && !messages.isEmpty { stream.append(0x0A) }

            var cuts = Set((0..<Int.random(in: 0...8, using: &rng)).map { _ in Int.random(in: 0...stream.count, using: &rng) })
            cuts.insert(0); cuts.insert(stream.count)
            let points = cuts.sorted()

            var framer = LineFramer(maxMessageBytes: 40)
            var out: [[UInt8]] = []
            for (a, b) in zip(points, points.dropFirst()) {
                out += try framer.frame(Array(stream[a..<b]))
            }
            if let last = framer.finish() { out.append(last) }

            // A final empty message without a trailing newline has no bytes, so finish() cannot return it.
            var expected = messages
            if !trailingNewline, expected.last == [] { expected.removeLast() }
            XCTAssertEqual(out, expected, "iteration \(iteration)")
            if out != expected { return }
        }
    }
}
