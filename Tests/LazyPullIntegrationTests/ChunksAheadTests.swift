@testable import LazyPullFS
import LazyPullOCI
import Testing

/// What a read of a lazily served file fetches with it: the whole rest of a file up to
/// 8 MiB compressed, else the chunks read and 2 MiB past them, at least one chunk.
@Suite("Chunks fetched ahead of a read")
struct ChunksAheadTests {
    /// A file of `count` chunks, each `compressed` bytes in the blob.
    static func file(chunks count: Int, compressed: Int64) -> [Chunk] {
        (0..<count).map { i in
            Chunk(fileOffset: Int64(i) << 22, size: 1 << 22, compressedStart: Int64(i) * compressed,
                  compressedEnd: Int64(i + 1) * compressed, innerOffset: 0, digest: Digest.sha256(of: [UInt8]()),
                  index: i)
        }
    }

    static let MiB: Int64 = 1 << 20

    @Test("fetched ahead", arguments: [
        // (chunks, compressed bytes each, from, through, expected range)
        (2, 3 * MiB, 0, 0, 0..<2),      // 6 MiB: the whole file
        (8, 1 * MiB, 0, 0, 0..<8),      // exactly 8 MiB: still whole
        (10, 3 * MiB, 0, 0, 0..<2),     // large: the next chunk is past 2 MiB, taken anyway
        (30, 1 * MiB, 5, 5, 5..<8),     // large: two chunks of read-ahead
        (30, 1 * MiB, 5, 7, 5..<10),    // a read over three chunks, then two more
        (30, 1 * MiB, 27, 27, 27..<30), // the rest is small: all of it
        (30, 1 * MiB, 29, 29, 29..<30), // the last chunk
    ] as [(Int, Int64, Int, Int, Range<Int>)])
    func ahead(count: Int, compressed: Int64, from: Int, through: Int, expected: Range<Int>) {
        let chunks = Self.file(chunks: count, compressed: compressed)
        let taken = LayerFileSystem.chunksAhead(chunks, from: from, through: through)
        #expect(taken.indices == expected)
    }
}
