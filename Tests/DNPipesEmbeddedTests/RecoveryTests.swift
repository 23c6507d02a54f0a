#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest
import DNPipesTestSupport
import DNPipesCore
@testable import DNPipesEmbedded

/// Crash recovery: a newest segment cut short, followed by garbage or by a torn batch (a torn write) reopens
/// as exactly the batches wholly before the damage, and the pipe goes on working.
final class RecoveryTests: StoreTestCase {
    private let config = EmbeddedStore.Configuration(maxMessageBytes: 4096, segmentBytes: 2048)

    /// Writes `messages` to pipe `p` in a fresh store at `directory` and shuts it down.
    private func populate(_ messages: [[UInt8]], at directory: String) throws {
        try withStore(at: directory, config) { store in
            try store.create(name("p"))
            try write(try openLog(store, "p"), messages, batch: 5)
        }
    }

    /// The batches of the newest segment (base `base`) as `populate` wrote them: one per push of five.
    private func batches(_ messages: [[UInt8]], newestBase base: Int64) -> [Range<Int>] {
        stride(from: Int(base), to: messages.count, by: 5).map { $0..<min($0 + 5, messages.count) }
    }

    /// How many messages survive when the newest segment (base `base`) is cut at byte `cut` (every batch
    /// wholly before the cut), and the size of that file once recovery has cut its torn tail.
    private func survivors(_ messages: [[UInt8]], newestBase base: Int64, cut: Int) -> (kept: Int, fileSize: Int) {
        var kept = Int(base), bytes = BatchFormat.fileHeaderSize
        for batch in batches(messages, newestBase: base) {
            bytes += batchSize(messages[batch])
            if bytes > cut { break }
            kept = batch.upperBound
        }
        return (kept, recoveredSize(messages, newestBase: base, kept: kept, headerKept: cut >= BatchFormat.fileHeaderSize))
    }

    /// The size of the newest segment holding its messages below `kept`: its header and whole batches, or
    /// nothing when no batch is left and the header was torn too.
    private func recoveredSize(_ messages: [[UInt8]], newestBase base: Int64, kept: Int, headerKept: Bool) -> Int {
        let whole = batches(messages, newestBase: base).filter { $0.upperBound <= kept }
        if whole.isEmpty && !headerKept { return 0 }
        return BatchFormat.fileHeaderSize + whole.reduce(0) { $0 + batchSize(messages[$1]) }
    }

    /// Messages encoded as the store writes them, the first with offset `first`.
    private func encodedBatch(_ messages: [[UInt8]], first: Int64) -> [UInt8] {
        var encoded = BatchFormat.encode(MessageBlock(messages))
        encoded.place(at: first)
        return encoded.bytes
    }

    private func appendGarbage(_ path: String, _ garbage: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_APPEND)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let n = garbage.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        XCTAssertEqual(n, garbage.count)
    }

    /// A copy of the pipe directory of `original` in a fresh directory, for one damaged variant.
    private func copyStore(_ original: String, as name: String) throws -> String {
        let copy = root + "/" + name
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: original + "/pipes", toPath: copy + "/pipes")
        return copy
    }

    /// Reopens `directory`, checks the pipe holds exactly `expected` (and, given `newest`, that the torn tail
    /// was cut off that segment file, leaving `newestSize` bytes), appends two messages, and checks that they
    /// follow and survive another reopen.
    private func checkRecovered(at directory: String, expected: [[UInt8]], newest: (base: Int64, path: String)? = nil,
                                newestSize: Int? = nil, context: String,
                                file: StaticString = #filePath, line: UInt = #line) throws {
        let extra = [Array("appended 1".utf8), Array("appended 2".utf8)]
        try withStore(at: directory, config) { store in
            let log = try openLog(store, "p")
            if let newest, let newestSize {
                XCTAssertEqual(try fileSize(newest.path), newestSize, "torn tail left on disk; " + context, file: file, line: line)
            }
            let got = try readAll(log)
            XCTAssertEqual(got.messages.count, expected.count, context, file: file, line: line)
            XCTAssertEqual(got.messages, expected, context, file: file, line: line)
            XCTAssertEqual(log.bounds().end, Int64(expected.count), context, file: file, line: line)
            try write(log, extra)
            XCTAssertEqual(try readAll(log, from: Int64(expected.count)).messages, extra, context, file: file, line: line)
        }
        try withStore(at: directory, config) { store in
            let log = try openLog(store, "p")
            XCTAssertEqual(try readAll(log).messages, expected + extra, context, file: file, line: line)
        }
    }

    func testTruncatedNewestSegment() throws {
        var rng = SplitMix64(seed: 21)
        let messages = randomMessages(80, maxLength: 90, using: &rng)
        try populate(messages, at: data)
        let segments = try segmentFiles("p")
        guard segments.count > 1 else { return XCTFail("expected several segments") }
        let newest = segments.last!
        let size = try fileSize(newest.path)
        let cut = size / 2 + 3
        XCTAssertEqual(truncate(newest.path, off_t(cut)), 0)
        let (kept, recovered) = survivors(messages, newestBase: newest.base, cut: cut)
        XCTAssertLessThan(kept, messages.count)
        try checkRecovered(at: data, expected: Array(messages[..<kept]), newest: newest, newestSize: recovered,
                           context: "cut at \(cut) of \(size)")
    }

    /// The newest segment cut to nothing, or inside its file header (a crash can leave a new segment so):
    /// it holds nothing, and reopens empty.
    func testNewestSegmentCutInsideItsHeader() throws {
        var rng = SplitMix64(seed: 22)
        let messages = randomMessages(80, maxLength: 90, using: &rng)
        try populate(messages, at: data)
        let newest = try segmentFiles("p").last!
        XCTAssertGreaterThan(newest.base, 0)
        for cut in [0, 1, 3, BatchFormat.fileHeaderSize - 1] {
            let copy = try copyStore(data, as: "header\(cut)")
            let path = copy + "/pipes/p/" + Segment.fileName(base: newest.base)
            XCTAssertEqual(truncate(path, off_t(cut)), 0)
            try checkRecovered(at: copy, expected: Array(messages[..<Int(newest.base)]), newest: (newest.base, path),
                               newestSize: 0, context: "cut to \(cut)")
        }
    }

    func testGarbageAfterNewestSegment() throws {
        var rng = SplitMix64(seed: 23)
        let messages = randomMessages(40, maxLength: 90, using: &rng)
        try populate(messages, at: data)
        let newest = try segmentFiles("p").last!
        let size = try fileSize(newest.path)
        try appendGarbage(newest.path, (0..<37).map { _ in UInt8.random(in: 0...255, using: &rng) })
        try checkRecovered(at: data, expected: messages, newest: newest, newestSize: size, context: "garbage")
    }

    /// A batch header that claims a long batch, with too few bytes after it, is a torn tail too.
    func testTornBatchHeaderAfterNewestSegment() throws {
        let messages = (0..<10).map { Array("message \($0)".utf8) }
        try populate(messages, at: data)
        let newest = try segmentFiles("p").last!
        let size = try fileSize(newest.path)
        let torn = encodedBatch([[UInt8](repeating: 0x41, count: 100)], first: Int64(messages.count))
        try appendGarbage(newest.path, Array(torn[0..<50]))
        try checkRecovered(at: data, expected: messages, newest: newest, newestSize: size, context: "torn batch")
    }

    /// Property: for many random cuts of the newest segment, with or without garbage written after the cut,
    /// the reopened pipe holds a prefix of the messages containing every message wholly before the cut (and,
    /// as garbage never passes the checksum, exactly those).
    func testRandomCutsRecoverAPrefix() throws {
        var rng = SplitMix64(seed: 0xDEAD)
        let messages = randomMessages(60, maxLength: 120, using: &rng)
        let original = root + "/original"
        try populate(messages, at: original)
        for iteration in 0..<50 {
            let copy = try copyStore(original, as: "copy\(iteration)")
            let newest = try segmentFiles("p", in: copy).last!
            let size = try fileSize(newest.path)
            let cut = Int.random(in: 0...size, using: &rng)
            XCTAssertEqual(truncate(newest.path, off_t(cut)), 0)
            let garbage = Bool.random(using: &rng)
                ? (0..<Int.random(in: 1...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } : []
            if !garbage.isEmpty { try appendGarbage(newest.path, garbage) }
            let (kept, recoveredSize) = survivors(messages, newestBase: newest.base, cut: cut)
            let context = "iteration \(iteration): cut \(cut) of \(size), \(garbage.count) garbage bytes"

            let recovered = try withStore(at: copy, config) { store in try readAll(try openLog(store, "p")).messages }
            XCTAssertEqual(Array(messages.prefix(recovered.count)), recovered, "not a prefix; " + context)
            XCTAssertGreaterThanOrEqual(recovered.count, kept, "lost whole messages; " + context)
            XCTAssertEqual(recovered.count, kept, context)
            XCTAssertEqual(try fileSize(newest.path), recoveredSize, "torn tail left on disk; " + context)
            if iteration % 10 == 0 {
                try checkRecovered(at: copy, expected: Array(messages[..<kept]), newest: newest, newestSize: recoveredSize,
                                   context: context)
            }
            try FileManager.default.removeItem(atPath: copy)
        }
    }

    /// Property: a torn batch, the next write's batch of which the file got a random part or all of it with
    /// a random byte changed (as when a crash leaves some of its pages on disk but not others), is dropped,
    /// and every batch before it is kept.
    func testRandomTornBatchesAreDropped() throws {
        var rng = SplitMix64(seed: 0xBA7C4)
        let messages = randomMessages(60, maxLength: 300, using: &rng)
        let original = root + "/original"
        try populate(messages, at: original)
        let next = randomMessages(12, maxLength: 400, using: &rng)
        for iteration in 0..<50 {
            let copy = try copyStore(original, as: "torn\(iteration)")
            let newest = try segmentFiles("p", in: copy).last!
            let whole = batches(messages, newestBase: newest.base)
            // Keep a random number of the newest segment's batches, then tear the next one.
            let keptBatches = Int.random(in: 0...whole.count, using: &rng)
            let kept = keptBatches == 0 ? Int(newest.base) : whole[keptBatches - 1].upperBound
            let size = recoveredSize(messages, newestBase: newest.base, kept: kept, headerKept: true)
            XCTAssertEqual(truncate(newest.path, off_t(size)), 0)
            let torn = Array(next.prefix(Int.random(in: 1...next.count, using: &rng)))
            var tail = encodedBatch(torn, first: Int64(kept))
            let how: String
            if Bool.random(using: &rng) {
                tail = Array(tail.prefix(Int.random(in: 1..<tail.count, using: &rng)))
                how = "cut to \(tail.count) bytes"
            } else {
                let at = Int.random(in: 0..<tail.count, using: &rng)
                tail[at] ^= UInt8.random(in: 1...255, using: &rng)
                how = "byte \(at) of \(tail.count) changed"
            }
            try appendGarbage(newest.path, tail)
            let context = "iteration \(iteration): \(keptBatches) batches kept, a batch of \(torn.count) \(how)"
            let recovered = try withStore(at: copy, config) { store in try readAll(try openLog(store, "p")).messages }
            XCTAssertEqual(recovered, Array(messages[..<kept]), context)
            XCTAssertEqual(try fileSize(newest.path), size, "torn batch left on disk; " + context)
            if iteration % 10 == 0 {
                try checkRecovered(at: copy, expected: Array(messages[..<kept]), newest: newest, newestSize: size, context: context)
            }
            try FileManager.default.removeItem(atPath: copy)
        }
    }

    /// A changed byte in a batch of the newest segment (not its last) ends the segment there: the batches
    /// before it are kept, it and every later one dropped, as a write after a lost one cannot be kept.
    func testDamagedBatchInsideNewestSegment() throws {
        let messages = (0..<60).map { Array(String(format: "message %03d of the newest segment", $0).utf8) }
        try withStore(at: data, EmbeddedStore.Configuration(maxMessageBytes: 4096, segmentBytes: 1 << 20)) { store in
            try store.create(name("p"))
            try write(try openLog(store, "p"), messages, batch: 5)
        }
        let newest = try segmentFiles("p").last!
        XCTAssertEqual(newest.base, 0)
        let whole = batches(messages, newestBase: 0)
        let damaged = 4
        let at = recoveredSize(messages, newestBase: 0, kept: whole[damaged - 1].upperBound, headerKept: true)
        let fd = open(newest.path, O_RDWR)
        var byte: UInt8 = 0
        XCTAssertEqual(pread(fd, &byte, 1, off_t(at + 60)), 1)
        byte ^= 0x20
        XCTAssertEqual(pwrite(fd, &byte, 1, off_t(at + 60)), 1)
        close(fd)
        try checkRecovered(at: data, expected: Array(messages[..<whole[damaged].lowerBound]), newest: newest,
                           newestSize: at, context: "batch \(damaged) damaged")
    }

    func testReopenFinishesAnInterruptedReset() throws {
        let messages = (0..<150).map { Array("message \($0) of an interrupted reset".utf8) }
        try populate(messages, at: data)
        let old = try segmentFiles("p")
        guard old.count > 2 else { return XCTFail("expected more than 2 segments, got \(old.count)") }
        let end = Int64(messages.count)
        let pipe = data + "/pipes/p/"
        XCTAssertTrue(FileManager.default.createFile(atPath: pipe + Segment.fileName(base: end), contents: Data()))
        try Data("\(end)\n".utf8).write(to: URL(fileURLWithPath: pipe + "start"))

        try withStore(at: data, config) { store in
            let log = try openLog(store, "p")
            XCTAssertEqual(log.bounds().oldest, end)
            XCTAssertEqual(log.bounds().end, end)
            guard case .nothing = try log.fetch(from: 0, maxBytes: 1000) else { return XCTFail("messages after reset") }
            XCTAssertEqual(try segmentFiles("p").map(\.base), [end], "old segments left on disk")
            try write(log, [Array("after".utf8)])
            XCTAssertEqual(try readAll(log).first, end)
        }
    }

    /// Segments wholly below the start offset are deleted on open; the one holding it is kept and reads begin
    /// at the start offset.
    func testStartOffsetInsideASegment() throws {
        let messages = (0..<150).map { Array("message \($0) before the start".utf8) }
        try populate(messages, at: data)
        let old = try segmentFiles("p")
        guard old.count > 2 else { return XCTFail("expected more than 2 segments, got \(old.count)") }
        let start = old[1].base + 3
        try Data("\(start)\n".utf8).write(to: URL(fileURLWithPath: data + "/pipes/p/start"))

        try withStore(at: data, config) { store in
            let log = try openLog(store, "p")
            XCTAssertEqual(log.bounds().oldest, start)
            XCTAssertEqual(try segmentFiles("p").map(\.base), old.dropFirst().map(\.base))
            let all = try readAll(log)
            XCTAssertEqual(all.first, start)
            XCTAssertEqual(all.messages, Array(messages[Int(start)...]))
        }
    }

    /// A damaged batch in an older segment (not a torn write) ends that segment: readers get the batches
    /// before it and then continue with the next segment.
    func testDamageInOlderSegmentSkipsToNextSegment() throws {
        let messages = (0..<200).map { Array(String(format: "message %03d with some padding", $0).utf8) }
        try populate(messages, at: data)
        let segments = try segmentFiles("p")
        guard segments.count > 2 else { return XCTFail("expected more than 2 segments, got \(segments.count)") }
        let damaged = segments[1], following = segments[2]
        // Flip a payload byte of the second batch of the second segment.
        let batchBytes = batchSize(messages[0..<5])
        let fd = open(damaged.path, O_RDWR)
        defer { close(fd) }
        var byte: UInt8 = 0
        let at = off_t(BatchFormat.fileHeaderSize + batchBytes + batchBytes - 10)
        XCTAssertEqual(pread(fd, &byte, 1, at), 1)
        byte ^= 0xFF
        XCTAssertEqual(pwrite(fd, &byte, 1, at), 1)

        try withStore(at: data, config) { store in
            let log = try openLog(store, "p")
            XCTAssertEqual(log.bounds().end, Int64(messages.count))
            let got = try readAll(log, allowGaps: true)
            let lost = Int(damaged.base + 5)..<Int(following.base)
            XCTAssertEqual(got.messages, Array(messages[..<lost.lowerBound]) + Array(messages[lost.upperBound...]))
        }
    }
}
