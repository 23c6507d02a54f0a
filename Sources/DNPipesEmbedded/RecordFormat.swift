import DNPipesCore

/// The earlier on-disk format of segment files, a record at a time, which `LegacySegment` reads to rewrite
/// such files in the batch format (`BatchFormat`). One record:
///
///     crc32c: UInt32 LE   over the length field and the payload
///     length: UInt32 LE   payload bytes
///     payload             the message, without its newline
///
/// A record's offset is not stored: it is the segment's base offset (its file name) plus the record's index.
/// A crash can leave a torn record at the end of the newest segment; it fails its checksum or runs past the
/// end of the file, and recovery cuts the file there.
public enum RecordFormat {
    public static let headerSize = 8

    public static func encode(_ payloads: [[UInt8]]) -> [UInt8] { encode(MessageBlock(payloads)) }

    /// Encodes a block of messages into one buffer, written in place (no allocation per record).
    public static func encode(_ block: MessageBlock) -> [UInt8] {
        let total = block.payloadBytes + block.count * headerSize
        return [UInt8](unsafeUninitializedCapacity: total) { out, initialized in
            let raw = UnsafeMutableRawBufferPointer(out)
            var at = 0
            block.forEachPayload { payload in
                raw.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: at + 4, as: UInt32.self)
                if payload.count > 0 {
                    (raw.baseAddress! + at + headerSize).copyMemory(from: payload.baseAddress!, byteCount: payload.count)
                }
                // One pass over the length and the payload, just copied and still in cache.
                let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(at + 4)..<(at + headerSize + payload.count)]))
                raw.storeBytes(of: crc.littleEndian, toByteOffset: at, as: UInt32.self)
                at += headerSize + payload.count
            }
            initialized = at
        }
    }

    public enum Parsed: Equatable {
        /// A whole, valid record: its payload range within the buffer, and the record's total size.
        case record(payload: Range<Int>, size: Int)
        /// The buffer ends inside the record; `size` is how many bytes the whole record needs (if known).
        case incomplete(needed: Int?)
        /// The bytes are not a valid record (checksum mismatch or absurd length).
        case corrupt
    }

    /// Parses the record starting at `at`. `maxPayload` bounds the length field so garbage is not mistaken
    /// for a huge record.
    public static func parse(_ buffer: UnsafeRawBufferPointer, at: Int, maxPayload: Int, verify: Bool = true) -> Parsed {
        let available = buffer.count - at
        if available < headerSize { return .incomplete(needed: nil) }
        let crc = UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: at, as: UInt32.self))
        let length = Int(UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self)))
        if length > maxPayload { return .corrupt }
        let size = headerSize + length
        if available < size { return .incomplete(needed: size) }
        if verify {
            let lengthCRC = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[(at + 4)..<(at + 8)]))
            let actual = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[(at + 8)..<(at + size)]), seed: lengthCRC)
            if actual != crc { return .corrupt }
        }
        return .record(payload: (at + headerSize)..<(at + size), size: size)
    }

    /// Scans a whole segment image and returns how many valid records it starts with and the byte length of
    /// that valid prefix: everything after it is a torn tail to cut off.
    public static func validPrefix(_ buffer: UnsafeRawBufferPointer, maxPayload: Int) -> (records: Int, bytes: Int) {
        var at = 0
        var records = 0
        while true {
            switch parse(buffer, at: at, maxPayload: maxPayload) {
            case .record(_, let size):
                at += size
                records += 1
            case .incomplete, .corrupt:
                return (records, at)
            }
        }
    }
}
