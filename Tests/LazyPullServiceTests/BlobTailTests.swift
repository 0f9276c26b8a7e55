import Testing
@testable import LazyPullService

/// A blob's tail fetched before its manifest: which reads it can answer.
struct BlobTailTests {
    /// The last 4 bytes of a 10-byte blob: offsets 6 ..< 10.
    static let tail = BlobTail(bytes: [6, 7, 8, 9], size: 10)

    @Test(arguments: [
        (Int64(6), Int64(4), [UInt8]([6, 7, 8, 9]) as [UInt8]?),
        (7, 2, [7, 8]),
        (9, 1, [9]),
        (10, 0, []),
        (5, 2, nil),     // starts before the tail
        (8, 3, nil),     // runs past the blob
        (0, 10, nil),
        (6, -1, nil),
    ])
    func answers(offset: Int64, length: Int64, expected: [UInt8]?) {
        #expect(Self.tail.bytes(at: offset, length: length) == expected)
    }
}
