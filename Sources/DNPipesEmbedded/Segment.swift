#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CWriteback
import DNPipesCore

/// One file of a pipe's log: batches of messages for offsets `base ..< base + count` (see `BatchFormat`),
/// named by its base offset so that finding the segment holding an offset is a binary search over file
/// names, not a scan.
///
/// All mutation happens under the owning log's lock. Reads use `pread` on bytes below `size`, which are
/// complete once `write` returned, so they need no lock beyond a snapshot of `size`.
// @unchecked Sendable: mutation happens under the owning log's lock (above); reads need only a size taken there.
final class Segment: @unchecked Sendable {
    /// Every this many messages (at the next batch) the segment remembers a batch's first offset and file
    /// position, so a read from any offset passes few batch headers before reaching it.
    static let indexStride: Int64 = 64

    let base: Int64
    let path: String
    /// The file's descriptor, open while it is used or recently was (see `DescriptorCache`).
    private let file: DescriptorCache.Slot
    private let files: DescriptorCache
    private(set) var size: Int64 = 0
    private(set) var count: Int64 = 0
    /// The sparse index: first offsets, file positions and message counts of batches (see `indexStride`).
    private(set) var indexOffsets: [Int64] = []
    private(set) var indexPositions: [Int64] = []
    private(set) var indexCounts: [Int] = []
    /// Messages in the segment's last batch.
    private var lastBatchCount = 0
    /// Where the bytes not yet handed to the disk start (see `startWriteback`).
    private var writebackFrom: Int64 = 0
    /// Writeback is started once this much is waiting: a page still being appended to is never under
    /// writeback, so writers of single lines do not wait for the disk at every write.
    static let writebackBytes: Int64 = 1 << 20

    static func fileName(base: Int64) -> String {
        let digits = String(base)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".log"
    }

    static func base(ofFileName name: String) -> Int64? {
        guard name.hasSuffix(".log"), name.count == 24 else { return nil }
        return Int64(name.dropLast(4))
    }

    private init(base: Int64, path: String, files: DescriptorCache = .shared) {
        self.base = base
        self.path = path
        self.files = files
        file = DescriptorCache.Slot(path: path)
    }

    deinit { files.close(file) }

    /// Runs `body` with the file's descriptor (opened again if the cache closed it).
    func withDescriptor<T>(_ body: (Int32) throws -> T) throws -> T { try files.use(file, body) }

    /// Creates an empty segment file. It gets its header with its first batches (so that a reset on a full
    /// disk, which starts a segment, needs no room); an empty file is an empty segment.
    static func create(directory: String, base: Int64) throws -> Segment {
        let path = directory + "/" + fileName(base: base)
        let fd = try systemCall("create segment \(path)") { Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
        close(fd)
        return Segment(base: base, path: path)
    }

    /// Opens an existing segment (in the batch format) and checks every batch. With `cutTornTail`, a torn or
    /// corrupt tail is cut off the file (it can only be a write that was never acknowledged); otherwise the
    /// segment ends there. `record` is told each valid message's offset and payload length, in order.
    ///
    /// Every batch below the segment's size is checked here once, and every batch appended later was
    /// checksummed as it was encoded: reads check only that the file still has the bytes.
    static func open(path: String, base: Int64, maxPayload: Int, cutTornTail: Bool,
                     record: (_ offset: Int64, _ length: Int) -> Void = { _, _ in }) throws -> (Segment, cutBytes: Int64) {
        let segment = Segment(base: base, path: path)
        let cut: Int64 = try segment.withDescriptor { fd in
            var st = stat()
            try systemCall("stat \(path)") { fstat(fd, &st) }
            let fileSize = Int64(st.st_size)
            if fileSize == 0 { return 0 }
            var window = FileWindow(fd: fd, limit: fileSize, chunk: 1 << 20, path: path)
            guard try window.load(0, BatchFormat.fileHeaderSize),
                  window.withBytes(at: 0, { raw, _ in BatchFormat.hasFileHeader(raw) }) else {
                throw PipeError.io("\(path) is not a segment file of this format")
            }
            segment.size = Int64(BatchFormat.fileHeaderSize)
            var position = segment.size
            while try window.load(position, BatchFormat.fixedHeaderSize) {
                guard let header = window.withBytes(at: position, { raw, at in BatchFormat.header(raw, at: at) }),
                      header.count > 0, header.firstOffset == base + segment.count,
                      try window.load(position, header.size) else { break }
                let valid = window.withBytes(at: position) { raw, at in
                    guard BatchFormat.isValid(raw, at: at, header, maxPayload: maxPayload) else { return false }
                    for i in 0..<header.count {
                        record(header.firstOffset + Int64(i), BatchFormat.Header.length(raw, at: at, message: i))
                    }
                    return true
                }
                guard valid else { break }
                segment.noteBatch(at: position, count: header.count, size: header.size)
                position = segment.size
            }
            let cut = fileSize - segment.size
            if cut > 0 && cutTornTail {
                try systemCall("truncate \(path)") { ftruncate(fd, off_t(segment.size)) }
                try systemCall("fsync \(path)") { fsync(fd) }
            }
            return cut
        }
        return (segment, cut)
    }

    /// Counts a batch of `count` messages at file position `position`, the first with offset `base + count`.
    ///
    /// A batch is indexed when it starts `indexStride` messages or more after the last indexed one, and also
    /// when it or the batch before it holds that many: then the batches of large writes are all indexed, a
    /// small one that ends a write included, and read whole (see Segment+WholeBatches.swift), while the
    /// index still has at most about two entries per `indexStride` messages.
    private func noteBatch(at position: Int64, count batchCount: Int, size batchSize: Int) {
        let stride = Int(Segment.indexStride)
        if indexOffsets.isEmpty || batchCount >= stride || lastBatchCount >= stride
            || base + count - indexOffsets[indexOffsets.count - 1] >= Segment.indexStride {
            indexOffsets.append(base + count)
            indexPositions.append(position)
            indexCounts.append(batchCount)
        }
        count += Int64(batchCount)
        size = position + Int64(batchSize)
        lastBatchCount = batchCount
    }

    /// Appends already encoded batches. On a failed or short write the file is cut back, so a batch is
    /// either wholly there or not at all.
    func append(_ encoded: BatchFormat.Encoded) throws {
        let start = size
        let batchesAt = start == 0 ? Int64(BatchFormat.fileHeaderSize) : start
        try withDescriptor { fd in
            files.wrote(file)
            do {
                if start == 0 { try writeBytes(fd, BatchFormat.fileHeader, at: 0, path: path) }
                try writeBytes(fd, encoded.bytes, at: batchesAt, path: path)
                startWriteback(fd, end: batchesAt + Int64(encoded.bytes.count))
            } catch {
                _ = ftruncate(fd, off_t(start))
                throw error
            }
        }
        var position = batchesAt
        for batch in encoded.batches {
            noteBatch(at: position, count: batch.count, size: batch.size)
            position += Int64(batch.size)
        }
    }

    /// Has the disk start on the whole pages written since the last call, once there are `writebackBytes` of
    /// them, while the writer sends more: the fdatasync that acknowledges its close then finds little left
    /// to write. A failure changes nothing (the fdatasync still writes them).
    private func startWriteback(_ fd: Int32, end: Int64) {
        let pages = end & ~4095
        guard pages - writebackFrom >= Segment.writebackBytes else { return }
        _ = dnp_start_writeback(fd, writebackFrom, pages - writebackFrom)
        writebackFrom = pages
    }

    func sync() throws { try files.sync(file) }

    /// The file's status (its mtime is the time of its last write).
    func status() throws -> stat {
        try withDescriptor { fd in
            var st = stat()
            try systemCall("stat \(path)") { fstat(fd, &st) }
            return st
        }
    }

    /// The first offset and file position of the last indexed batch at or before `offset`.
    func indexed(atOrBefore offset: Int64) -> (offset: Int64, position: Int64) {
        var lo = 0, hi = indexOffsets.count - 1
        if hi < 0 || offset < indexOffsets[0] { return (base, Int64(BatchFormat.fileHeaderSize)) }
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if indexOffsets[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return (indexOffsets[lo], indexPositions[lo])
    }

    /// What a read found: messages from `from` on in one buffer, the offset after them, and the batch to
    /// scan from for that offset.
    struct Read {
        var messages: MessageBlock
        var next: Int64
        var resume: (offset: Int64, position: Int64)
    }

    /// Reads messages from `offset` on, about `maxBytes` of them, starting the scan at a batch at or before
    /// it (its first offset and position). `limit` is the segment size snapshot taken under the log's lock.
    /// The messages are handed out in the buffer the batches were read into, each followed by its newline.
    func read(from offset: Int64, scanFrom start: (offset: Int64, position: Int64), limit: Int64, maxBytes: Int) throws -> Read {
        try withDescriptor { fd in
            var window = FileWindow(fd: fd, limit: limit, chunk: min(maxBytes, 1 << 20) + BatchFormat.batchBytes + (16 << 10), path: path)
            var at = start.offset, position = start.position
            var ranges: [Range<Int>] = []
            var bytes = 0
            var result = Read(messages: MessageBlock(), next: offset, resume: start)
            while position < limit && bytes < maxBytes {
                // Messages taken lie in the window's buffer: stop at a batch beyond it rather than read again.
                if !ranges.isEmpty && !window.holds(position, BatchFormat.fixedHeaderSize) { break }
                guard try window.load(position, BatchFormat.fixedHeaderSize),
                      let header = window.withBytes(at: position, { raw, at in BatchFormat.header(raw, at: at) }),
                      header.count > 0, header.firstOffset == at, position + Int64(header.size) <= limit else {
                    throw PipeError.io("\(path) no longer holds the batch checked at byte \(position)")
                }
                if at + Int64(header.count) <= offset {
                    at += Int64(header.count)
                    position += Int64(header.size)
                    result.resume = (at, position)
                    continue
                }
                if !ranges.isEmpty && !window.holds(position, header.size) { break }
                guard try window.load(position, header.size) else {
                    throw PipeError.io("\(path) no longer holds the batch checked at byte \(position)")
                }
                let taken: Int? = window.withBytes(at: position) { raw, batchAt in
                    var framed = batchAt + header.headerSize
                    let end = batchAt + header.size
                    for i in 0..<header.count {
                        let length = BatchFormat.Header.length(raw, at: batchAt, message: i)
                        // Lengths that pass the batch's end: the file changed since it was checked.
                        guard framed + length < end else { return nil }
                        if at + Int64(i) >= offset {
                            ranges.append(framed..<(framed + length))
                            bytes += length + 1
                            if bytes >= maxBytes { return i + 1 }
                        }
                        framed += length + 1
                    }
                    return header.count
                }
                guard let taken else { throw PipeError.io("\(path) no longer holds the batch checked at byte \(position)") }
                result.next = at + Int64(taken)
                if taken < header.count {
                    result.resume = (at, position)
                    break
                }
                at += Int64(header.count)
                position += Int64(header.size)
                result.resume = (at, position)
            }
            if !ranges.isEmpty { result.messages = MessageBlock(framedIn: window.buffer, ranges: ranges) }
            return result
        }
    }
}

/// A window of a file read in large chunks: the bytes at a position are read once and parsed in place.
struct FileWindow {
    let fd: Int32
    /// The end of the bytes that may be read (the file's size, or a segment size snapshot).
    let limit: Int64
    let chunk: Int
    let path: String
    private(set) var buffer: [UInt8] = []
    private var start: Int64 = 0

    init(fd: Int32, limit: Int64, chunk: Int, path: String) {
        self.fd = fd
        self.limit = limit
        self.chunk = chunk
        self.path = path
    }

    /// Whether the buffer holds the `count` bytes at `position`.
    func holds(_ position: Int64, _ count: Int) -> Bool {
        position >= start && position + Int64(count) <= start + Int64(buffer.count)
    }

    /// Makes the `count` bytes at `position` available, reading a chunk from there if the buffer lacks
    /// them. False when they pass the limit or the file ends before them.
    mutating func load(_ position: Int64, _ count: Int) throws -> Bool {
        if position + Int64(count) > limit { return false }
        if holds(position, count) { return true }
        let toRead = Int(min(limit - position, Int64(max(chunk, count))))
        buffer = try readBytes(fd, count: toRead, at: position, path: path)
        start = position
        return buffer.count >= count
    }

    /// Runs `body` with the buffer and the index in it of file position `position` (which `load` made
    /// available).
    func withBytes<T>(at position: Int64, _ body: (UnsafeRawBufferPointer, Int) throws -> T) rethrows -> T {
        try buffer.withUnsafeBytes { raw in try body(raw, Int(position - start)) }
    }
}
