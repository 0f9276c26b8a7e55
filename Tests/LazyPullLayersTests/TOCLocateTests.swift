import Foundation
import LazyPullOCI
import Testing
@testable import LazyPullLayers

/// Finding a lazy layer's TOC from untrusted descriptor fields (size, annotations) and an
/// untrusted blob end: no value may trap, each bad one is a one-line invalid-layer error.
@Suite("TOC locating")
struct TOCLocateTests {
    static let digest = Digest.sha256(of: Array("layer".utf8))

    /// A footer as EStargzWriter writes it, with `offsetText` in place of the 16 offset digits.
    static func footer(_ offsetText: String) -> [UInt8] {
        var f = EStargzWriter.footer(tocOffset: 0)
        let text = Array(offsetText.utf8)
        f.replaceSubrange(16..<32, with: text)
        return f
    }

    static func estargz(size: Int64) -> Descriptor {
        Descriptor(mediaType: MediaType.ociLayerGzip, digest: digest, size: size,
                   annotations: [LayerTOCReader.tocDigestAnnotation: Digest.sha256(of: []).description])
    }

    static func zstd(position: String, size: Int64) -> Descriptor {
        Descriptor(mediaType: MediaType.ociLayerZstd, digest: digest, size: size,
                   annotations: ["io.github.containers.zstd-chunked.manifest-position": position,
                                 "io.github.containers.zstd-chunked.manifest-checksum": Digest.sha256(of: []).description])
    }

    /// What a fetch answered; thrown by fetches the test wants to see reached.
    struct Fetched: Error, Equatable { var offset: Int64; var length: Int64 }

    // MARK: Footer

    @Test(arguments: [("00000000000000ff", 255), ("00000000000000FF", 255), ("7fffffffffffffff", Int64.max),
                      ("0000000000000000", 0)] as [(String, Int64)])
    func parsesFooterOffsets(text: String, offset: Int64) throws {
        #expect(try LayerTOCReader.parseFooter(Self.footer(text), layer: Self.digest) == offset)
    }

    @Test(arguments: ["-fffffffffffffff", "-000000000000001", "+00000000000000f", " 00000000000000f", "00000000000000f ",
                      "ffffffffffffffff", "8000000000000000", "000000000000000g", "0x0000000000000f", "00000000000000\u{0}f"])
    func rejectsFooterOffsets(text: String) {
        #expect(performing: { try LayerTOCReader.parseFooter(Self.footer(text), layer: Self.digest) },
                throws: { isRefusal($0, [.invalidLayer]) })
    }

    @Test(arguments: [0, 16, 50, 52])
    func rejectsFootersOfTheWrongSize(count: Int) {
        let bytes = Array((Self.footer("0000000000000010") + [0]).prefix(count))
        #expect(performing: { try LayerTOCReader.parseFooter(bytes, layer: Self.digest) },
                throws: { isRefusal($0, [.invalidLayer]) })
    }

    // MARK: eStargz tail

    /// eStargz descriptors with hostile sizes and footers: every fetch is checked against
    /// the blob (`size`), and the answer has the asked length with `footer` at the end.
    @Test(arguments: [
        (Int64.max, "-fffffffffffffff"), (Int64.max, "7fffffffffffffff"), (Int64.max, "0000000000000000"),
        (Int64.max, "7fffffffffffffcc"), (Int64.max, "7fffffffffffffcb"), (Int64.max, "7ffffffffffe0000"), (Int64.max - 1, "7ffffffffffffffe"), (100, "0000000000000031"),
        (100, "0000000000000064"), (100, "ffffffffffffffff"), (52, "0000000000000001"), (51, "0000000000000000"),
        (0, "0000000000000000"), (-1, "0000000000000000"), (Int64.min, "0000000000000000"),
    ] as [(Int64, String)])
    func hostileEStargzTails(size: Int64, offsetText: String) {
        let footer = Self.footer(offsetText)
        #expect(performing: {
            _ = try LayerTOCReader.locate(Self.estargz(size: size)) { offset, length in
                let (limit, overflow) = size.subtractingReportingOverflow(length)
                guard offset >= 0, length > 0, length <= 64 << 20, !overflow, offset <= limit else {
                    throw LazyPullError(.registry, "fetch out of the blob: \(offset) + \(length)")
                }
                var bytes = [UInt8](repeating: 0, count: Int(length))
                if offset + length == size && length >= 51 { bytes.replaceSubrange((bytes.count - 51)..., with: footer) }
                return bytes
            }
        }, throws: { isRefusal($0, [.invalidLayer]) })
    }

    /// A fetch that answers fewer (or more) bytes than asked is an error, not a bad index.
    @Test(arguments: [-1, 1, -51, -100_000])
    func wrongLengthAnswers(delta: Int) {
        let footer = Self.footer("0000000000000010")
        #expect(performing: {
            _ = try LayerTOCReader.locate(Self.estargz(size: 1 << 20)) { offset, length in
                let n = max(0, Int(length) + delta)
                var bytes = [UInt8](repeating: 0, count: n)
                if n >= 51 { bytes.replaceSubrange((n - 51)..., with: footer) }
                return bytes
            }
        }, throws: { isRefusal($0, [.invalidLayer]) })
    }

    /// A real eStargz blob still locates.
    @Test func locatesARealEStargzBlob() throws {
        var t = TarBuilder()
        for i in 0..<50 { t.add(name: "dir\(i)/file\(i)", content: Array(repeating: UInt8(i), count: 3000)) }
        t.end()
        let path = NSTemporaryDirectory() + "/lazypull-toc-\(UUID().uuidString)"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        defer { close(fd); unlink(path) }
        let output = try EStargzWriter.convert(BytesSource(t.bytes, step: 4096), prefetch: [], to: fd)
        let blob = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let layer = Descriptor(mediaType: MediaType.ociLayerGzip, digest: output.digest, size: output.size,
                               annotations: [LayerTOCReader.tocDigestAnnotation: output.tocDigest.description])
        let located = try LayerTOCReader.locate(layer) { offset, length in Array(blob[Int(offset)..<Int(offset + length)]) }
        #expect(located.format == .estargz)
        #expect(located.toc.entries.contains { $0.name == "dir49/file49" })
    }

    /// `convert --estargz` of a tar whose header claims a terabyte and ends after a few bytes:
    /// a one-line error, no terabyte allocated (memory follows the bytes that arrive).
    @Test func convertRefusesAHeaderThatClaimsMoreThanArrives() throws {
        var t = TarBuilder()
        t.bytes += TarBuilder.header(name: "huge", type: UInt8(ascii: "0"), size: 1 << 40)
        t.bytes += [UInt8](repeating: 7, count: 4096)
        let path = NSTemporaryDirectory() + "/lazypull-toc-\(UUID().uuidString)"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        defer { close(fd); unlink(path) }
        #expect(performing: {
            _ = try EStargzWriter.convert(BytesSource(t.bytes, step: 4096), prefetch: [], to: fd)
        }, throws: { isRefusal($0, [.invalidLayer]) })
    }

    // MARK: zstd:chunked position

    /// Positions that must be refused before any fetch, against each layer size.
    @Test(arguments: [
        "9223372036854775807:1:1:1", "-1:5:5:1", "1:-5:5:1", "1:9223372036854775807:1:1", "1:5:-1:1",
        "1:5:9223372036854775807:1", "1:0:5:1", "1:5:5:2", "1:5:5", "1:5:5:1:", "1:5:5:1:1", "::::", "",
        "a:b:c:1", "1:5:5:-1", "9223372036854775806:2:1:1", "1:67108865:5:1", "1:5:67108865:1",
        "99999999999999999999:1:1:1", "1 :5:5:1",
    ], [100, Int64.max, 0, -1, Int64.min] as [Int64])
    func rejectsZstdPositions(position: String, size: Int64) {
        var fetched = false
        #expect(performing: {
            _ = try LayerTOCReader.locate(Self.zstd(position: position, size: size)) { offset, length in
                fetched = true
                throw Fetched(offset: offset, length: length)
            }
        }, throws: { isRefusal($0, [.invalidLayer], mentioning: "manifest position") })
        #expect(!fetched)
    }

    /// Positions within the blob reach the fetch with exactly their range.
    @Test(arguments: [("10:20:5:1", 100, 10, 20), ("80:20:5:1", 100, 80, 20), ("0:1:0:1", 1, 0, 1),
                      ("9223372036854775806:1:1:1", Int64.max, Int64.max - 1, 1)] as [(String, Int64, Int64, Int64)])
    func acceptsZstdPositions(position: String, size: Int64, offset: Int64, length: Int64) {
        #expect(throws: Fetched(offset: offset, length: length)) {
            _ = try LayerTOCReader.locate(Self.zstd(position: position, size: size)) { offset, length in
                throw Fetched(offset: offset, length: length)
            }
        }
    }

    @Test func zstdShortAnswerIsAnError() {
        #expect(performing: {
            _ = try LayerTOCReader.locate(Self.zstd(position: "10:20:5:1", size: 100)) { _, length in
                [UInt8](repeating: 0, count: Int(length) - 1)
            }
        }, throws: { isRefusal($0, [.invalidLayer]) })
    }

    /// The first tail request stays within 128 KiB ... 1 MiB whatever the descriptor says.
    @Test(arguments: [Int64.min, -1, 0, 52, 1 << 20, 1 << 30, Int64.max])
    func tailFetchSizeIsBounded(size: Int64) {
        let n = LayerTOCReader.tailFetchSize(forBlobOf: size)
        #expect(n >= 128 << 10 && n <= 1 << 20)
    }
}
