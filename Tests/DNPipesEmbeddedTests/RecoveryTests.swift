#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest
import DNPipesTestSupport
import DNPipesCore
@testable import DNPipesEmbedded

/// Crash recovery: a newest segment cut short or followed by garbage (a torn write) reopens as exactly the
/// records wholly before the damage, and the pipe goes on working.
final class RecoveryTests: StoreTestCase {
    private let config = EmbeddedStore.Configuration(maxMessageBytes: 4096, segmentBytes: 2048)

    /// Writes `messages` to pipe `p` in a fresh store at `directory` and shuts it down.
    private func populate(_ messages: [[UInt8]], at directory: String) throws {
        try withStore(at: directory, config) { store in
            try store.create(name("p"))
            try write(try openLog(store, "p"), messages, batch: 5)
        }
    }

    /// How many messages survive when the newest segment (base `base`) is cut at byte `cut`.
    private func survivors(_ messages: [[UInt8]], newestBase base: Int64, cut: Int) -> Int {
        var kept = Int(base), bytes = 0
        for m in messages[Int(base)...] {
            bytes += m.count + RecordFormat.headerSize
            if bytes > cut { break }
            kept += 1
        }
        return kept
    }

    private func appendGarbage(_ path: String, _ garbage: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_APPEND)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let n = garbage.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        XCTAssertEqual(n, garbage.count)
    }

    /// Reopens `directory`, checks the pipe holds exactly `expected` (and, given `newest`, that the torn tail
    /// was cut off that segment file), appends two messages, and checks that they follow and survive another
    /// reopen.
    private func checkRecovered(at directory: String, expected: [[UInt8]], newest: (base: Int64, path: String)? = nil,
                                context: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let extra = [Array("appended 1".utf8), Array("appended 2".utf8)]
        try withStore(at: directory, config) { store in
            let log = try openLog(store, "p")
            if let newest {
                let whole = expected[Int(newest.base)...].reduce(0) { $0 + $1.count + RecordFormat.headerSize }
                XCTAssertEqual(try fileSize(newest.path), whole, "torn tail left on disk; " + context, file: file, line: line)
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
        // A cut inside the first record's header, inside its payload, and in the middle of the file.
        let cut = size / 2 + 3
        XCTAssertEqual(truncate(newest.path, off_t(cut)), 0)
        let kept = survivors(messages, newestBase: newest.base, cut: cut)
        XCTAssertLessThan(kept, messages.count)
        try checkRecovered(at: data, expected: Array(messages[..<kept]), newest: newest, context: "cut at \(cut) of \(size)")
    }

    func testNewestSegmentCutToNothing() throws {
        var rng = SplitMix64(seed: 22)
        let messages = randomMessages(80, maxLength: 90, using: &rng)
        try populate(messages, at: data)
        let newest = try segmentFiles("p").last!
        XCTAssertGreaterThan(newest.base, 0)
        XCTAssertEqual(truncate(newest.path, 0), 0)
        try checkRecovered(at: data, expected: Array(messages[..<Int(newest.base)]), newest: newest, context: "cut to 0")
    }

    func testGarbageAfterNewestSegment() throws {
        var rng = SplitMix64(seed: 23)
        let messages = randomMessages(40, maxLength: 90, using: &rng)
        try populate(messages, at: data)
        let newest = try segmentFiles("p").last!
        try appendGarbage(newest.path, (0..<37).map { _ in UInt8.random(in: 0...255, using: &rng) })
        try checkRecovered(at: data, expected: messages, newest: newest, context: "garbage")
    }

    /// A header that claims a long record, with too few bytes after it, is a torn tail too.
    func testTornRecordHeaderAfterNewestSegment() throws {
        let messages = (0..<10).map { Array("message \($0)".utf8) }
        try populate(messages, at: data)
        let newest = try segmentFiles("p").last!
        let torn = RecordFormat.encode([[UInt8](repeating: 0x41, count: 100)])
        try appendGarbage(newest.path, Array(torn[0..<50]))
        try checkRecovered(at: data, expected: messages, newest: newest, context: "torn record")
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
            let copy = root + "/copy\(iteration)"
            try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: false)
            try FileManager.default.copyItem(atPath: original + "/pipes", toPath: copy + "/pipes")
            let newest = try segmentFiles("p", in: copy).last!
            let size = try fileSize(newest.path)
            let cut = Int.random(in: 0...size, using: &rng)
            XCTAssertEqual(truncate(newest.path, off_t(cut)), 0)
            let garbage = Bool.random(using: &rng)
                ? (0..<Int.random(in: 1...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } : []
            if !garbage.isEmpty { try appendGarbage(newest.path, garbage) }
            let kept = survivors(messages, newestBase: newest.base, cut: cut)
            let context = "iteration \(iteration): cut \(cut) of \(size), \(garbage.count) garbage bytes"

            let recovered = try withStore(at: copy, config) { store in try readAll(try openLog(store, "p")).messages }
            XCTAssertEqual(Array(messages.prefix(recovered.count)), recovered, "not a prefix; " + context)
            XCTAssertGreaterThanOrEqual(recovered.count, kept, "lost whole messages; " + context)
            XCTAssertEqual(recovered.count, kept, context)
            if iteration % 10 == 0 {
                try checkRecovered(at: copy, expected: Array(messages[..<kept]), newest: newest, context: context)
            }
            try FileManager.default.removeItem(atPath: copy)
        }
    }

    /// A crash in the middle of a reset leaves the new start offset and the new empty segment, but also the old
    /// segments: reopening deletes the old segment files and the pipe reads as empty.
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

    /// A damaged record in an older segment (not a torn write) ends that segment: readers get the records
    /// before it and then continue with the next segment.
    func testDamageInOlderSegmentSkipsToNextSegment() throws {
        let messages = (0..<200).map { Array(String(format: "message %03d with some padding", $0).utf8) }
        try populate(messages, at: data)
        let segments = try segmentFiles("p")
        guard segments.count > 2 else { return XCTFail("expected more than 2 segments, got \(segments.count)") }
        let damaged = segments[1], following = segments[2]
        let recordSize = messages[0].count + RecordFormat.headerSize
        // Flip a payload byte of the third record of the second segment.
        let fd = open(damaged.path, O_RDWR)
        defer { close(fd) }
        var byte: UInt8 = 0
        XCTAssertEqual(pread(fd, &byte, 1, off_t(2 * recordSize + 10)), 1)
        byte ^= 0xFF
        XCTAssertEqual(pwrite(fd, &byte, 1, off_t(2 * recordSize + 10)), 1)

        try withStore(at: data, config) { store in
            let log = try openLog(store, "p")
            XCTAssertEqual(log.bounds().end, Int64(messages.count))
            let got = try readAll(log, allowGaps: true)
            let lost = Int(damaged.base + 2)..<Int(following.base)
            XCTAssertEqual(got.messages, Array(messages[..<lost.lowerBound]) + Array(messages[lost.upperBound...]))
        }
    }
}
