#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import DNPipesCore

/// One file of a pipe's log: records for offsets `base ..< base + count`, named by its base offset so that
/// finding the segment holding an offset is a binary search over file names, not a scan.
///
/// All mutation happens under the owning log's lock. Reads use `pread` on bytes below `size`, which are
/// complete once `write` returned, so they need no lock beyond a snapshot of `size`.
// @unchecked Sendable: mutation happens under the owning log's lock (above); reads need only a size taken there.
final class Segment: @unchecked Sendable {
    /// Every this many records the segment remembers a (offset, file position) pair, so a read from any
    /// offset parses at most this many records before reaching it.
    static let indexStride: Int64 = 64

    let base: Int64
    let path: String
    /// The file's descriptor, open while it is used or recently was (see `DescriptorCache`).
    private let file: DescriptorCache.Slot
    private let files: DescriptorCache
    private(set) var size: Int64 = 0
    private(set) var count: Int64 = 0
    private var indexOffsets: [Int64] = []
    private var indexPositions: [Int64] = []

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

    static func create(directory: String, base: Int64) throws -> Segment {
        let path = directory + "/" + fileName(base: base)
        let fd = try systemCall("create segment \(path)") { Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
        close(fd)
        return Segment(base: base, path: path)
    }

    /// Opens an existing segment and checks every record. With `cutTornTail`, a torn or corrupt tail is cut
    /// off the file (it can only be a write that was never acknowledged); otherwise the segment ends there.
    /// `record` is told each valid record's offset and payload length, in order.
    static func open(path: String, base: Int64, maxPayload: Int, cutTornTail: Bool,
                     record: (_ offset: Int64, _ length: Int) -> Void = { _, _ in }) throws -> (Segment, cutBytes: Int64) {
        let segment = Segment(base: base, path: path)
        let cut: Int64 = try segment.withDescriptor { fd in
            var st = stat()
            try systemCall("stat \(path)") { fstat(fd, &st) }
            let fileSize = Int64(st.st_size)
            var scanner = RecordScanner(fd: fd, limit: fileSize, maxPayload: maxPayload)
            while let found = try scanner.next() {
                record(base + segment.count, found.size - RecordFormat.headerSize)
                segment.noteRecord(at: found.position, size: found.size)
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

    private func noteRecord(at position: Int64, size recordSize: Int) {
        if count % Segment.indexStride == 0 {
            indexOffsets.append(base + count)
            indexPositions.append(position)
        }
        count += 1
        size = position + Int64(recordSize)
    }

    /// Appends already encoded records. On a failed or short write the file is cut back, so a record is
    /// either wholly there or not at all.
    func append(encoded: [UInt8], recordSizes: [Int]) throws {
        let start = size
        var written = 0
        try withDescriptor { fd in
            files.wrote(file)
            try encoded.withUnsafeBytes { raw in
                while written < raw.count {
                    do {
                        written += try systemCall("write \(path)") {
                            pwrite(fd, raw.baseAddress! + written, raw.count - written, off_t(start) + off_t(written))
                        }
                    } catch {
                        _ = ftruncate(fd, off_t(start))
                        throw error
                    }
                }
            }
        }
        var position = start
        for s in recordSizes {
            noteRecord(at: position, size: s)
            position += Int64(s)
        }
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

    /// The position of the last indexed record at or before `offset`.
    func indexed(atOrBefore offset: Int64) -> (offset: Int64, position: Int64) {
        var lo = 0, hi = indexOffsets.count - 1
        if hi < 0 || offset < indexOffsets[0] { return (base, 0) }
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if indexOffsets[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return (indexOffsets[lo], indexPositions[lo])
    }

    /// Reads messages from `offset` on, starting the scan at a known (offset, position) at or before it.
    /// `limit` is the segment size snapshot taken under the log's lock.
    func read(from offset: Int64, scanFrom start: (offset: Int64, position: Int64), limit: Int64,
              maxBytes: Int, maxPayload: Int) throws -> (messages: MessageBlock, next: Int64, position: Int64) {
        try withDescriptor { fd in try read(fd: fd, from: offset, scanFrom: start, limit: limit, maxBytes: maxBytes, maxPayload: maxPayload) }
    }

    private func read(fd: Int32, from offset: Int64, scanFrom start: (offset: Int64, position: Int64), limit: Int64,
                      maxBytes: Int, maxPayload: Int) throws -> (messages: MessageBlock, next: Int64, position: Int64) {
        var scanner = RecordScanner(fd: fd, limit: limit, maxPayload: maxPayload, position: start.position,
                                    chunk: max(64 << 10, min(maxBytes, 1 << 20) + 4096))
        var at = start.offset
        var messages = MessageBlock()
        var bytes = 0
        var position = start.position
        while bytes < maxBytes, let record = try scanner.next(appendingTo: &messages, when: at >= offset) {
            if at >= offset { bytes += record.size - RecordFormat.headerSize + 1 }
            at += 1
            position = record.position + Int64(record.size)
        }
        if scanner.sawCorruption && messages.isEmpty && at < base + count {
            throw PipeError.io("corrupt record in \(path) at byte \(position)")
        }
        return (messages, at, position)
    }
}

/// Reads records sequentially from a file in large chunks, checking each checksum.
struct RecordScanner {
    let fd: Int32
    let limit: Int64
    let maxPayload: Int
    let chunk: Int
    private var buffer: [UInt8] = []
    private var bufferPosition: Int64
    private var cursor = 0
    private(set) var sawCorruption = false

    init(fd: Int32, limit: Int64, maxPayload: Int, position: Int64 = 0, chunk: Int = 1 << 20) {
        self.fd = fd
        self.limit = limit
        self.maxPayload = maxPayload
        self.chunk = chunk
        self.bufferPosition = position
    }

    struct Record {
        var position: Int64
        var size: Int
    }

    /// The next valid record, or nil at the end or at the first invalid one.
    mutating func next() throws -> Record? {
        var unused = MessageBlock()
        return try next(appendingTo: &unused, when: false)
    }

    /// The next valid record; its payload is appended to `block` when `copy` is true.
    mutating func next(appendingTo block: inout MessageBlock, when copy: Bool) throws -> Record? {
        while true {
            let parsed = buffer.withUnsafeBytes { RecordFormat.parse($0, at: cursor, maxPayload: maxPayload) }
            switch parsed {
            case .record(let payload, let size):
                let position = bufferPosition + Int64(cursor)
                if copy { block.append(buffer[payload]) }
                cursor += size
                return Record(position: position, size: size)
            case .corrupt:
                sawCorruption = true
                return nil
            case .incomplete(let needed):
                let here = bufferPosition + Int64(cursor)
                if here >= limit { return nil }
                let remaining = buffer.count - cursor
                let want = max(chunk, needed ?? 0, RecordFormat.headerSize)
                let toRead = Int(min(Int64(want), limit - here))
                if toRead <= remaining { sawCorruption = remaining > 0; return nil }
                var fresh = [UInt8](repeating: 0, count: toRead)
                let got = try fresh.withUnsafeMutableBytes { raw -> Int in
                    var done = 0
                    while done < toRead {
                        let n = try systemCall("read segment") { pread(fd, raw.baseAddress! + done, toRead - done, off_t(here) + off_t(done)) }
                        if n == 0 { break }
                        done += n
                    }
                    return done
                }
                if got <= remaining { sawCorruption = remaining > 0; return nil }
                fresh.removeLast(toRead - got)
                buffer = fresh
                bufferPosition = here
                cursor = 0
            }
        }
    }
}

