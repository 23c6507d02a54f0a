#if canImport(Glibc)
import Glibc
#endif
import DNPipesCore

/// Segment files of the earlier format, a record at a time (`RecordFormat`), rewritten in the batch format
/// (`BatchFormat`) when their pipe is first opened, so that the store reads one format.
///
/// A file is rewritten beside itself (`NAME.log.tmp`), synced, given the old file's mtime (retention and a
/// pipe's last push go by it) and renamed over it: a crash leaves either file whole, and a `.tmp` left by
/// one is removed at the next open. The valid records before any damage are kept, as opening a file of the
/// earlier format kept them; the damage itself is dropped.
enum LegacySegment {
    static let temporarySuffix = ".tmp"

    /// Whether the segment file at `path` must be rewritten: it is not empty and lacks the batch format's
    /// header (a file of the earlier format, or one torn inside the header, which holds nothing).
    static func needsRewrite(path: String) throws -> Bool {
        let fd = try systemCall("open \(path)") { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: BatchFormat.fileHeaderSize)
        let n = try head.withUnsafeMutableBytes { raw in
            try systemCall("read \(path)") { pread(fd, raw.baseAddress!, raw.count, 0) }
        }
        if n == 0 { return false }
        return n < head.count || !head.withUnsafeBytes { BatchFormat.hasFileHeader($0) }
    }

    /// Rewrites the file at `path` (base offset `base`) in the batch format. Returns how many records it
    /// held and how many bytes after them were not a valid record (a torn tail, or damage).
    static func rewrite(path: String, base: Int64, maxPayload: Int) throws -> (records: Int64, droppedBytes: Int64) {
        let source = try systemCall("open \(path)") { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(source) }
        var st = stat()
        try systemCall("stat \(path)") { fstat(source, &st) }
        let temporary = path + temporarySuffix
        let target = try systemCall("create \(temporary)") { Glibc.open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        var renamed = false
        defer {
            close(target)
            if !renamed { unlink(temporary) }
        }
        var scanner = RecordScanner(fd: source, limit: Int64(st.st_size), maxPayload: maxPayload)
        var records: Int64 = 0
        var validBytes: Int64 = 0
        var written: Int64 = 0
        var pending = MessageBlock()
        var pendingBytes = 0
        func flush() throws {
            guard !pending.isEmpty else { return }
            var encoded = BatchFormat.encode(pending)
            encoded.place(at: base + records - Int64(pending.count))
            let bytes = written == 0 ? BatchFormat.fileHeader + encoded.bytes : encoded.bytes
            try writeBytes(target, bytes, at: written, path: temporary)
            written += Int64(bytes.count)
            pending = MessageBlock()
            pendingBytes = 0
        }
        while let record = try scanner.next(appendingTo: &pending, when: true) {
            records += 1
            validBytes = record.position + Int64(record.size)
            pendingBytes += record.size - RecordFormat.headerSize
            if pendingBytes >= 1 << 20 { try flush() }
        }
        try flush()
        var times = [st.st_atim, st.st_mtim]
        try systemCall("set the times of \(temporary)") { futimens(target, &times) }
        try systemCall("fsync \(temporary)") { fsync(target) }
        try systemCall("rename \(temporary)") { rename(temporary, path) }
        renamed = true
        return (records, Int64(st.st_size) - validBytes)
    }
}

/// Reads records of the earlier format sequentially from a file in large chunks, checking each checksum.
struct RecordScanner {
    let fd: Int32
    let limit: Int64
    let maxPayload: Int
    let chunk: Int
    private var buffer: [UInt8] = []
    private var bufferPosition: Int64
    private var cursor = 0

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

    /// The next valid record, or nil at the end or at the first invalid one; its payload is appended to
    /// `block` when `copy` is true.
    mutating func next(appendingTo block: inout MessageBlock, when copy: Bool) throws -> Record? {
        while true {
            let parsed = buffer.withUnsafeBytes { raw in
                let parsed = RecordFormat.parse(raw, at: cursor, maxPayload: maxPayload)
                if copy, case .record(let payload, _) = parsed { block.append(UnsafeRawBufferPointer(rebasing: raw[payload])) }
                return parsed
            }
            switch parsed {
            case .record(_, let size):
                let position = bufferPosition + Int64(cursor)
                cursor += size
                return Record(position: position, size: size)
            case .corrupt:
                return nil
            case .incomplete(let needed):
                let here = bufferPosition + Int64(cursor)
                if here >= limit { return nil }
                let remaining = buffer.count - cursor
                let want = max(chunk, needed ?? 0, RecordFormat.headerSize)
                let toRead = Int(min(Int64(want), limit - here))
                if toRead <= remaining { return nil }
                let fresh = try readBytes(fd, count: toRead, at: here, path: "segment of the earlier format")
                if fresh.count <= remaining { return nil }
                buffer = fresh
                bufferPosition = here
                cursor = 0
            }
        }
    }
}
