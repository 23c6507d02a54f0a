#if canImport(Glibc)
import Glibc
#endif
import DNPipesCore

/// Reading whole batches into one buffer of nothing but their messages as readers get them.
///
/// Where the sparse index has every batch one after another (writes of 64 or more messages each, as a
/// program writing a file makes; see `noteBatch`) the positions and sizes of the batches are known without reading them: one
/// `preadv` then puts their headers in one buffer and their framed bytes, back to back, in another, which a
/// reader takes whole, with no copy. A read from inside a batch, or across small batches, reads through a
/// `FileWindow` instead.
extension Segment {
    /// A batch known from the index: its first offset, message count, file position and size.
    struct WholeBatch {
        var offset: Int64
        var count: Int
        var position: Int64
        var size: Int
        var headerSize: Int { BatchFormat.headerSize(count: count) }
        var framedBytes: Int { size - headerSize }
    }

    /// At most this many batches per read (two `iovec`s each, well under IOV_MAX).
    static let wholeBatchesPerRead = 128

    /// The batches from `offset` on, about `maxBytes` of messages, when `offset` starts an indexed batch
    /// and the batches after it are indexed one by one; nil otherwise. Called under the log's lock.
    func wholeBatches(from offset: Int64, maxBytes: Int) -> [WholeBatch]? {
        var lo = 0, hi = indexOffsets.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if indexOffsets[mid] < offset { lo = mid + 1 } else { hi = mid }
        }
        guard lo < indexOffsets.count, indexOffsets[lo] == offset else { return nil }
        var batches: [WholeBatch] = []
        var framed = 0
        var k = lo
        while k < indexOffsets.count && batches.count < Segment.wholeBatchesPerRead {
            let after = indexOffsets[k] + Int64(indexCounts[k])
            let end: Int64
            if k + 1 < indexOffsets.count && indexOffsets[k + 1] == after {
                end = indexPositions[k + 1]
            } else if k + 1 == indexOffsets.count && after == base + count {
                end = size
            } else {
                break
            }
            let batch = WholeBatch(offset: indexOffsets[k], count: indexCounts[k], position: indexPositions[k],
                                   size: Int(end - indexPositions[k]))
            if !batches.isEmpty && framed + batch.framedBytes > maxBytes { break }
            batches.append(batch)
            framed += batch.framedBytes
            if framed >= maxBytes { break }
            k += 1
        }
        return batches.isEmpty ? nil : batches
    }

    /// Reads the batches `wholeBatches` gave, or returns nil when the file gave fewer bytes in one call
    /// (a read through a window then takes them).
    func read(_ batches: [WholeBatch]) throws -> Read? {
        let headerTotal = batches.reduce(0) { $0 + $1.headerSize }
        let framedTotal = batches.reduce(0) { $0 + $1.framedBytes }
        var headers: [UInt8] = []
        var complete = false
        let framed: [UInt8] = try withDescriptor { fd in
            try [UInt8](unsafeUninitializedCapacity: framedTotal) { framedOut, framedDone in
                headers = try [UInt8](unsafeUninitializedCapacity: headerTotal) { headerOut, headerDone in
                    var vectors: [iovec] = []
                    vectors.reserveCapacity(2 * batches.count)
                    var h = 0, f = 0
                    for batch in batches {
                        vectors.append(iovec(iov_base: UnsafeMutableRawPointer(headerOut.baseAddress! + h), iov_len: batch.headerSize))
                        vectors.append(iovec(iov_base: UnsafeMutableRawPointer(framedOut.baseAddress! + f), iov_len: batch.framedBytes))
                        h += batch.headerSize
                        f += batch.framedBytes
                    }
                    let n = try systemCall("read \(path)") { preadv(fd, vectors, Int32(vectors.count), off_t(batches[0].position)) }
                    complete = n == headerTotal + framedTotal
                    headerDone = complete ? headerTotal : 0
                }
                framedDone = complete ? framedTotal : 0
            }
        }
        guard complete else { return nil }
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(batches.reduce(0) { $0 + $1.count })
        try headers.withUnsafeBytes { raw in
            var h = 0, f = 0
            for batch in batches {
                guard let header = BatchFormat.header(raw, at: h), header.count == batch.count,
                      header.firstOffset == batch.offset, header.framedBytes == batch.framedBytes else {
                    throw PipeError.io("\(path) no longer holds the batch checked at byte \(batch.position)")
                }
                let end = f + batch.framedBytes
                for i in 0..<batch.count {
                    let length = BatchFormat.Header.length(raw, at: h, message: i)
                    guard f + length < end else { throw PipeError.io("\(path) no longer holds the batch checked at byte \(batch.position)") }
                    ranges.append(f..<(f + length))
                    f += length + 1
                }
                guard f == end else { throw PipeError.io("\(path) no longer holds the batch checked at byte \(batch.position)") }
                h += batch.headerSize
            }
        }
        let last = batches[batches.count - 1]
        let next = last.offset + Int64(last.count)
        return Read(messages: MessageBlock(framedIn: framed, ranges: ranges), next: next,
                    resume: (next, last.position + Int64(last.size)))
    }
}
