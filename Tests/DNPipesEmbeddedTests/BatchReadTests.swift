import Foundation
import XCTest
import DNPipesTestSupport
import DNPipesCore
@testable import DNPipesEmbedded

/// Fetches over batches of every kind: whole batches read straight into a buffer of framed bytes (writes of
/// many messages), reads through a window (small writes, offsets inside a batch), and both after a reopen.
final class BatchReadTests: StoreTestCase {
    private let config = EmbeddedStore.Configuration(maxMessageBytes: 8192, segmentBytes: 512 << 10)

    /// Makes pipe `p` and runs `body` with its log.
    private func withPipe(segmentBytes: Int64 = 512 << 10, _ body: (PipeLog) throws -> Void) throws {
        try withStore(at: data, EmbeddedStore.Configuration(maxMessageBytes: 8192, segmentBytes: segmentBytes)) { store in
            try store.create(name("p"))
            try body(try openLog(store, "p"))
        }
    }

    /// Pushes `writes` times the messages `next` gives, each time in one push, and returns them all.
    private func push(_ log: PipeLog, writes: Int, _ next: () -> [[UInt8]]) throws -> [[UInt8]] {
        let writer = try log.makeWriter()
        var messages: [[UInt8]] = []
        for _ in 0..<writes {
            let batch = next()
            try writer.push(batch)
            messages += batch
        }
        flush(writer)
        return messages
    }

    /// Property: after random writes (one message to hundreds, some past a batch's 64 KiB), fetches from
    /// random offsets with random sizes give exactly the messages from there on, framed as readers get them.
    func testRandomFetchesGiveTheMessages() throws {
        var rng = SplitMix64(seed: 0xBA7C)
        var messages: [[UInt8]] = []
        try withPipe { log in
            messages = try push(log, writes: 40) {
                let n = Bool.random(using: &rng) ? Int.random(in: 1...5, using: &rng) : Int.random(in: 64...400, using: &rng)
                return randomMessages(n, maxLength: Bool.random(using: &rng) ? 40 : 700, using: &rng)
            }
            try checkFetches(log, messages, using: &rng, context: "written")
        }
        try withStore(at: data, config) { store in
            try checkFetches(try openLog(store, "p"), messages, using: &rng, context: "reopened")
        }
    }

    private func checkFetches(_ log: PipeLog, _ messages: [[UInt8]], using rng: inout SplitMix64, context: String) throws {
        XCTAssertEqual(log.bounds().end, Int64(messages.count))
        for round in 0..<200 {
            let from = Int.random(in: 0..<messages.count, using: &rng)
            let maxBytes = [1, 100, 4096, 65536, 1 << 20].randomElement(using: &rng)!
            let where_ = "\(context), round \(round): from \(from), maxBytes \(maxBytes)"
            guard case .messages(let batch) = try log.fetch(from: Int64(from), maxBytes: maxBytes) else {
                return XCTFail("nothing; " + where_)
            }
            XCTAssertEqual(batch.offsets.first, Int64(from), where_)
            XCTAssertEqual(batch.messages, Array(messages[from..<(from + batch.count)]), where_)
            XCTAssertTrue(batch.block.isFramed, where_)
            let framed = batch.block.ranges.reduce(0) { $0 + $1.count + 1 }
            // About `maxBytes`: past it by at most a batch or a message.
            XCTAssertLessThanOrEqual(framed, maxBytes + BatchFormat.batchBytes + config.maxMessageBytes + 1, where_)
        }
        // Sequential readers of every size see every message once.
        for maxBytes in [1, 3000, 65536, 1 << 20] {
            XCTAssertEqual(try readAll(log, maxBytes: maxBytes).messages, messages, "\(context), read all by \(maxBytes)")
        }
    }

    /// Writes of many messages (a write of a program's buffer, its last batch small) are read whole: each
    /// fetch's buffer holds nothing but its messages, so a reader takes it without a copy.
    func testWritesOfManyMessagesAreReadWhole() throws {
        let line = [UInt8](repeating: 0x78, count: 100)
        // One segment: a fetch ends at a segment's end.
        try withPipe(segmentBytes: 128 << 20) { log in
            let messages = try push(log, writes: 30) { Array(repeating: line, count: 1300) }
            for maxBytes in [1 << 20, 200 << 10] {
                var next: Int64 = 0
                while case .messages(let batch) = try log.fetch(from: next, maxBytes: maxBytes) {
                    XCTAssertEqual(batch.offsets.first, next)
                    XCTAssertEqual(batch.block.bytes.count, batch.count * (line.count + 1), "a copy at offset \(next)")
                    XCTAssertGreaterThan(batch.block.bytes.count, maxBytes / 2, "a short fetch at offset \(next)")
                    next += Int64(batch.count)
                    if next == Int64(messages.count) { break }
                }
                XCTAssertEqual(next, Int64(messages.count))
            }
        }
    }

    /// A reader through the cursor gets the stream as it was written, from any byte position.
    func testReaderGetsTheStreamFromAnyPosition() throws {
        var rng = SplitMix64(seed: 0x5EEC)
        try withPipe { log in
            let messages = try push(log, writes: 12) {
                randomMessages(Int.random(in: 1...300, using: &rng), maxLength: 500, using: &rng)
            }
            let stream: [UInt8] = messages.flatMap { $0 + [0x0A] }
            for _ in 0..<30 {
                let at = Int.random(in: 0..<stream.count, using: &rng)
                var reader = PositionedReader(log: log, start: .oldest, stopAtEnd: true)
                var got: [UInt8] = []
                var position = Int64(at)
                while true {
                    let capacity = [4096, 65536, 1 << 20].randomElement(using: &rng)!
                    guard case .data(let bytes) = try reader.read(at: position, capacity: capacity) else { break }
                    got += bytes
                    position += Int64(bytes.count)
                }
                XCTAssertEqual(got.count, stream.count - at, "from byte \(at)")
                XCTAssertTrue(got == Array(stream[at...]), "from byte \(at)")
            }
        }
    }
}
