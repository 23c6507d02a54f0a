import DNPipesCore

/// The on-disk format of a segment file: a file header, then batches of records, each the messages of (a
/// part of) one write.
///
///     file header: "dnpb" | version: UInt32 LE   (8 bytes)
///     batch:
///         crc32c:      UInt32 LE    over the rest of the batch (the first offset last, see `Encoded`)
///         count:       UInt32 LE    messages in the batch (at least one)
///         framedBytes: UInt32 LE    bytes of the messages as a reader gets them (payload and newline each)
///         firstOffset: Int64 LE     offset of the batch's first message
///         lengths:     count × UInt32 LE, payload bytes of each message
///         framed:      each payload followed by a newline, contiguous
///
/// A reader's bytes lie in the file as the reader gets them, so a fetch hands out a batch's framed bytes
/// from the buffer it read, and one checksum covers a whole batch. Batches hold at most `batchBytes` framed
/// bytes (a longer message is a batch of its own): a read needs whole batches, and a reader of small buffers
/// then reads little more than it gets.
///
/// The version's high bit is set: read as the length field of the earlier format (`RecordFormat`), which
/// a file of that format starts with, it would exceed any message, so the two cannot be mistaken.
///
/// A crash can leave a torn batch at the end of the newest segment; it runs past the end of the file or
/// fails its checksum, and recovery cuts the file there.
enum BatchFormat {
    static let fileHeader: [UInt8] = Array("dnpb".utf8) + [0x01, 0x00, 0x00, 0x80]
    static let fileHeaderSize = 8
    static let fixedHeaderSize = 20
    static let batchBytes = 64 << 10

    static func headerSize(count: Int) -> Int { fixedHeaderSize + 4 * count }

    /// Whether a segment file starts with this format's header.
    static func hasFileHeader(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= fileHeaderSize && (0..<fileHeaderSize).allSatisfy { bytes[$0] == fileHeader[$0] }
    }

    /// Messages encoded as batches, all but their first offsets: an append encodes before its turn, when the
    /// offsets are not known yet, and `place(at:)` completes the batches in its turn.
    struct Encoded {
        private(set) var bytes: [UInt8]
        /// How many messages each batch holds and its size on disk.
        let batches: [(count: Int, size: Int)]
        /// Each batch's checksum over all but its first offset, which the checksum covers last.
        fileprivate let partialChecksums: [UInt32]

        /// Writes the batches' first offsets, the first message's being `first`, and their checksums.
        mutating func place(at first: Int64) {
            var offset = first, at = 0
            bytes.withUnsafeMutableBytes { raw in
                for (batch, partial) in zip(batches, partialChecksums) {
                    raw.storeBytes(of: offset.littleEndian, toByteOffset: at + 12, as: Int64.self)
                    let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(at + 12)..<(at + 20)]), seed: partial)
                    raw.storeBytes(of: crc.littleEndian, toByteOffset: at, as: UInt32.self)
                    offset += Int64(batch.count)
                    at += batch.size
                }
            }
        }
    }

    /// The batches a block of messages is written as: how many messages each holds and its size on disk.
    static func split(_ block: MessageBlock) -> [(count: Int, size: Int)] {
        var batches: [(count: Int, size: Int)] = []
        var count = 0, framed = 0
        for range in block.ranges {
            if count > 0 && framed + range.count + 1 > batchBytes {
                batches.append((count, headerSize(count: count) + framed))
                count = 0
                framed = 0
            }
            count += 1
            framed += range.count + 1
        }
        if count > 0 { batches.append((count, headerSize(count: count) + framed)) }
        return batches
    }

    /// Encodes a block of messages into one buffer, written in place; `place(at:)` completes it.
    static func encode(_ block: MessageBlock) -> Encoded {
        let batches = split(block)
        let total = batches.reduce(0) { $0 + $1.size }
        var partials: [UInt32] = []
        partials.reserveCapacity(batches.count)
        let bytes = [UInt8](unsafeUninitializedCapacity: total) { out, initialized in
            let raw = UnsafeMutableRawBufferPointer(out)
            block.bytes.withUnsafeBytes { payloads in
                var at = 0, message = 0
                for batch in batches {
                    let lengthsAt = at + fixedHeaderSize
                    var framedAt = at + headerSize(count: batch.count)
                    let framedStart = framedAt
                    for i in 0..<batch.count {
                        let range = block.ranges[message + i]
                        raw.storeBytes(of: UInt32(range.count).littleEndian, toByteOffset: lengthsAt + 4 * i, as: UInt32.self)
                        if !range.isEmpty {
                            (raw.baseAddress! + framedAt).copyMemory(from: payloads.baseAddress! + range.lowerBound, byteCount: range.count)
                        }
                        raw[framedAt + range.count] = UInt8(ascii: "\n")
                        framedAt += range.count + 1
                    }
                    raw.storeBytes(of: UInt32(batch.count).littleEndian, toByteOffset: at + 4, as: UInt32.self)
                    raw.storeBytes(of: UInt32(framedAt - framedStart).littleEndian, toByteOffset: at + 8, as: UInt32.self)
                    raw.storeBytes(of: Int64(0), toByteOffset: at + 12, as: Int64.self)
                    raw.storeBytes(of: UInt32(0), toByteOffset: at, as: UInt32.self)
                    // One pass over the batch, just written and still in cache.
                    partials.append(partialChecksum(UnsafeRawBufferPointer(raw), at: at, size: batch.size))
                    at += batch.size
                    message += batch.count
                }
                initialized = at
            }
        }
        return Encoded(bytes: bytes, batches: batches, partialChecksums: partials)
    }

    /// The checksum of a batch's count and framed size, then its lengths and framed bytes (the first offset,
    /// which comes between them in the file, is checksummed last).
    private static func partialChecksum(_ raw: UnsafeRawBufferPointer, at: Int, size: Int) -> UInt32 {
        let fields = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(at + 4)..<(at + 12)]))
        return CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(at + fixedHeaderSize)..<(at + size)]), seed: fields)
    }

    /// A batch's header fields, read from a buffer at the batch's start.
    struct Header {
        var count: Int
        var framedBytes: Int
        var firstOffset: Int64
        var headerSize: Int { BatchFormat.headerSize(count: count) }
        var size: Int { headerSize + framedBytes }
        /// Payload bytes of message `i` (read from the buffer that holds the batch, at `at`).
        static func length(_ buffer: UnsafeRawBufferPointer, at: Int, message i: Int) -> Int {
            Int(UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: at + fixedHeaderSize + 4 * i, as: UInt32.self)))
        }
    }

    /// Reads the fixed fields of the batch at `at`, or nil when fewer than the fixed header's bytes remain.
    static func header(_ buffer: UnsafeRawBufferPointer, at: Int) -> Header? {
        guard buffer.count - at >= fixedHeaderSize else { return nil }
        return Header(count: Int(UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self))),
                      framedBytes: Int(UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: at + 8, as: UInt32.self))),
                      firstOffset: Int64(littleEndian: buffer.loadUnaligned(fromByteOffset: at + 12, as: Int64.self)))
    }

    /// Whether the whole batch at `at` (all of it in `buffer`) is what was written: its checksum matches, and
    /// its lengths, each within `maxPayload`, add up to its framed bytes with a newline after every payload.
    static func isValid(_ buffer: UnsafeRawBufferPointer, at: Int, _ header: Header, maxPayload: Int) -> Bool {
        guard header.count > 0, buffer.count - at >= header.size else { return false }
        let stored = UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: at, as: UInt32.self))
        let partial = partialChecksum(buffer, at: at, size: header.size)
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[(at + 12)..<(at + 20)]), seed: partial) == stored else { return false }
        var end = at + header.headerSize
        for i in 0..<header.count {
            let length = Header.length(buffer, at: at, message: i)
            guard length <= maxPayload else { return false }
            end += length + 1
            guard end <= at + header.size, buffer[end - 1] == UInt8(ascii: "\n") else { return false }
        }
        return end == at + header.size
    }
}
