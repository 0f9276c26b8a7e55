import Foundation
import LazyPullOCI

/// One entry of a lazily readable layer's table of contents. The schema is shared by
/// eStargz (`stargz.index.json`) and zstd:chunked: files, directories, links and devices,
/// plus `chunk` entries that continue a large regular file.
public struct TOCEntry: Sendable, Codable, Equatable {
    public var name: String
    public var type: String
    public var size: Int64?
    public var modtime: String?
    public var linkName: String?
    public var mode: Int64?
    public var uid: Int?
    public var gid: Int?
    public var devMajor: Int?
    public var devMinor: Int?
    /// Values are base64 encoded.
    public var xattrs: [String: String]?
    public var digest: String?
    /// Where the compressed data of this entry (or chunk) starts in the blob.
    public var offset: Int64?
    public var endOffset: Int64?
    public var chunkOffset: Int64?
    public var chunkSize: Int64?
    public var chunkDigest: String?
    public var innerOffset: Int64?

    public init(name: String, type: String) {
        self.name = name
        self.type = type
    }
}

/// A layer's table of contents.
public struct LayerTOC: Sendable, Codable, Equatable {
    public var version: Int
    public var entries: [TOCEntry]
}

/// Layer formats that can be read without downloading the whole blob.
public enum LazyLayerFormat: String, Sendable, Codable {
    case estargz
    case zstdChunked = "zstd:chunked"
}

/// Finds and verifies the table of contents of an eStargz or zstd:chunked layer
/// (eStargz: containerd/stargz-snapshotter docs/estargz.md "Footer", "TOC";
/// zstd:chunked: containers/storage "zstd:chunked" manifest position and checksum annotations).
public enum LayerTOCReader {
    public static let tocDigestAnnotation = "containerd.io/snapshot/stargz/toc.digest"
    static let zstdPositionAnnotations = ["io.github.containers.zstd-chunked.manifest-position",
                                          "io.containers.zstd-chunked.manifest-position"]
    static let zstdChecksumAnnotations = ["io.github.containers.zstd-chunked.manifest-checksum",
                                          "io.containers.zstd-chunked.manifest-checksum"]
    /// The eStargz footer: an empty gzip member whose extra field holds the TOC offset.
    static let footerSize: Int64 = 51
    static let tocTarName = "stargz.index.json"
    static let maxTOCSize: Int64 = 64 << 20

    /// What a lazy reader of `layer` trusts besides its blob digest: the annotation that pins
    /// its TOC (eStargz's TOC digest, zstd:chunked's manifest checksum), nil for a layer read
    /// eagerly. A lazily read layer is the pair (blob digest, this): a registry that serves
    /// other bytes under the same blob digest brings another TOC, so whatever was built or
    /// cached for one pair must never serve the other (docs/security.md, rule 4).
    public static func tocAnnotation(of layer: Descriptor) -> String? {
        let annotations = layer.annotations ?? [:]
        switch format(of: layer) {
        case .estargz?: return annotations[tocDigestAnnotation]
        case .zstdChunked?: return zstdChecksumAnnotations.lazy.compactMap { annotations[$0] }.first
        case nil: return nil
        }
    }

    /// The lazy format a layer descriptor announces, or nil when it must be pulled eagerly.
    public static func format(of layer: Descriptor) -> LazyLayerFormat? {
        let annotations = layer.annotations ?? [:]
        if layer.mediaType == MediaType.ociLayerZstd,
           zstdPositionAnnotations.contains(where: { annotations[$0] != nil }),
           zstdChecksumAnnotations.contains(where: { annotations[$0] != nil }) {
            return .zstdChunked
        }
        if (layer.mediaType == MediaType.ociLayerGzip || layer.mediaType == MediaType.dockerLayerGzip),
           annotations[tocDigestAnnotation] != nil {
            return .estargz
        }
        return nil
    }

    /// Reads the TOC of `layer` through `fetch(offset, length)` and checks it against the
    /// digest its annotations carry: trust in every chunk digest derives from this check.
    /// Returns the TOC and its JSON as verified.
    public static func read(_ layer: Descriptor,
                            fetch: (_ offset: Int64, _ length: Int64) throws -> [UInt8]) throws -> (LayerTOC, [UInt8]) {
        let located = try locate(layer, fetch: fetch)
        return (located.toc, located.json)
    }

    /// A verified TOC and where the file data before it ends.
    public struct Located: Sendable {
        public var format: LazyLayerFormat
        public var toc: LayerTOC
        public var json: [UInt8]
        /// Offset of the TOC in the blob: the compressed data of the last chunk ends here.
        public var dataEnd: Int64

        public init(format: LazyLayerFormat, toc: LayerTOC, json: [UInt8], dataEnd: Int64) {
            self.format = format
            self.toc = toc
            self.json = json
            self.dataEnd = dataEnd
        }
    }

    public static func locate(_ layer: Descriptor,
                              fetch: (_ offset: Int64, _ length: Int64) throws -> [UInt8]) throws -> Located {
        let raw = try fetchVerified(layer, fetch: fetch)
        return Located(format: raw.format, toc: try decode(raw.json, layer: layer.digest), json: raw.json, dataEnd: raw.dataEnd)
    }

    /// The verified TOC JSON and where the data before it ends, not decoded.
    public static func fetchVerified(_ layer: Descriptor, fetch: (_ offset: Int64, _ length: Int64) throws -> [UInt8])
        throws -> (format: LazyLayerFormat, json: [UInt8], dataEnd: Int64) {
        guard let format = format(of: layer) else {
            throw LazyPullError(.invalidLayer, "layer \(layer.digest) carries no eStargz or zstd:chunked table of contents")
        }
        let (json, dataEnd): ([UInt8], Int64)
        switch format {
        case .estargz: (json, dataEnd) = try readEStargzTOC(layer, fetch: fetch)
        case .zstdChunked: (json, dataEnd) = try readZstdChunkedTOC(layer, fetch: fetch)
        }
        return (format, json, dataEnd)
    }

    public static func decode(_ json: [UInt8], layer: Digest) throws -> LayerTOC {
        do {
            return try TOCJSONParser.parse(json)
        } catch {
            throw LazyPullError(.invalidLayer, "invalid table of contents in layer \(layer): \(error)")
        }
    }

    /// The footer's gzip extra field carries `%016x` of the TOC offset followed by `STARGZ`
    /// (estargz.md "Footer"): exactly 16 hex digits, no sign, so the offset is never negative.
    static func parseFooter(_ footer: [UInt8], layer: Digest) throws -> Int64 {
        func isHexDigit(_ b: UInt8) -> Bool {
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)
        }
        guard footer.count == Int(footerSize), footer[0] == 0x1f, footer[1] == 0x8b, footer[2] == 8,
              footer[3] & 0x04 != 0, footer[10] == 26, footer[11] == 0,
              footer[12] == UInt8(ascii: "S"), footer[13] == UInt8(ascii: "G"), footer[14] == 22, footer[15] == 0,
              Array(footer[32..<38]) == Array("STARGZ".utf8) else {
            throw LazyPullError(.invalidLayer, "layer \(layer) has no eStargz footer")
        }
        // 16 hex digits above 7fffffffffffffff do not fit Int64: no such offset exists.
        guard footer[16..<32].allSatisfy(isHexDigit),
              let offset = Int64(String(decoding: footer[16..<32], as: UTF8.self), radix: 16), offset >= 0 else {
            throw LazyPullError(.invalidLayer, "layer \(layer): eStargz footer's TOC offset is not 16 hex digits of an offset")
        }
        return offset
    }

    /// Bytes read from the end of an eStargz blob at once: the footer and the TOC of a layer
    /// of a few thousand files, for at most 10 ms of extra transfer at 100 Mbit/s.
    static let tailFetchSize: Int64 = 128 << 10

    /// How much of the blob's end to ask for at first. A TOC grows with the number of files,
    /// which grows with the layer: about 1/128 of the blob (0.7 % measured on a Debian python
    /// layer) brings the whole TOC of most layers in one request, and a second request costs
    /// a round trip more than fetching up to 1 MiB too much. Any `size` (even negative, from
    /// an untrusted descriptor) gives a value in `128 KiB ... 1 MiB`.
    static func tailFetchSize(forBlobOf size: Int64) -> Int64 {
        min(max(tailFetchSize, size / 128), 1 << 20)
    }

    /// The most bytes the gzip member holding an eStargz TOC may decompress to: the TOC and
    /// at most 4 MiB of tar headers (a PAX header is at most ``TarLimits/maxExtensionSize``).
    /// Reading stops there, so a small compressed TOC region cannot cost minutes of inflating.
    static let maxTOCTarSize: Int64 = maxTOCSize + (4 << 20)

    /// The eStargz TOC (estargz.md "TOC, TOCEntries and Chunks"): the footer at the blob's end
    /// gives the TOC's offset; the TOC is a gzip member holding a tar with `stargz.index.json`.
    /// `layer.size` comes from an untrusted manifest: every offset is checked against it
    /// without arithmetic that can overflow, and every fetch's answer against its length.
    static func readEStargzTOC(_ layer: Descriptor, fetch: (Int64, Int64) throws -> [UInt8]) throws -> ([UInt8], Int64) {
        guard layer.size > footerSize else {
            throw LazyPullError(.invalidLayer, "layer \(layer.digest) is too small for eStargz")
        }
        // One request for the blob's tail usually brings the footer and the whole TOC; the
        // rest of a larger TOC takes a second one. 51 < tailLength ≤ 1 MiB.
        let tailLength = min(layer.size, tailFetchSize(forBlobOf: layer.size))
        let tailStart = layer.size - tailLength
        let tail = try fetch(tailStart, tailLength)
        guard tail.count == Int(tailLength) else {
            throw LazyPullError(.invalidLayer, "layer \(layer.digest): short read of the blob's end")
        }
        let tocEnd = tail.count - Int(footerSize)
        let tocOffset = try parseFooter(Array(tail[tocEnd...]), layer: layer.digest)
        // The TOC lies in tocOffset ..< dataLimit. Both are non-negative: no overflow below.
        let dataLimit = layer.size - footerSize
        guard tocOffset < dataLimit, dataLimit - tocOffset <= maxTOCSize else {
            throw LazyPullError(.invalidLayer, "layer \(layer.digest): eStargz TOC offset \(tocOffset) is out of range "
                                + "(blob of \(layer.size) bytes, TOC at most \(maxTOCSize) bytes)")
        }
        let compressed: [UInt8]
        if tocOffset >= tailStart {
            compressed = Array(tail[Int(tocOffset - tailStart)..<tocEnd])
        } else {
            let headLength = tailStart - tocOffset   // 0 < headLength < maxTOCSize
            let head = try fetch(tocOffset, headLength)
            guard head.count == Int(headLength) else {
                throw LazyPullError(.invalidLayer, "layer \(layer.digest): short read of the eStargz TOC")
            }
            compressed = head + tail[..<tocEnd]
        }
        let tar = TarReader(BoundedSource(IsalGzipSource(MemorySource(compressed)), limit: maxTOCTarSize,
                                          what: "eStargz TOC of layer \(layer.digest)"))
        while let entry = try tar.next() {
            guard entry.name == tocTarName, entry.type == .regular else { continue }
            guard entry.size <= maxTOCSize else { throw LazyPullError(.invalidLayer, "layer \(layer.digest): TOC too large") }
            let json = try tar.readRemainingContent()
            let expected = try Digest(parsing: layer.annotations?[tocDigestAnnotation] ?? "")
            try expected.verify(Digest.sha256(of: json), what: "table of contents of layer \(layer.digest)")
            return (json, tocOffset)
        }
        throw LazyPullError(.invalidLayer, "layer \(layer.digest): no \(tocTarName) in the eStargz TOC")
    }

    /// `manifest-position` is `offset:length:uncompressedLength:type` (decimal; type 1 is the
    /// JSON manifest); the checksum covers the compressed manifest bytes. Every field is
    /// range-checked against the (untrusted) `layer.size` without overflowing arithmetic:
    /// `offset ≥ 0`, `0 < length ≤ maxTOCSize`, `offset + length ≤ layer.size`,
    /// `0 ≤ uncompressed ≤ maxTOCSize`.
    static func readZstdChunkedTOC(_ layer: Descriptor, fetch: (Int64, Int64) throws -> [UInt8]) throws -> ([UInt8], Int64) {
        let annotations = layer.annotations ?? [:]
        let position = zstdPositionAnnotations.compactMap { annotations[$0] }.first ?? ""
        let fields = position.split(separator: ":", omittingEmptySubsequences: false).map { Int64($0) }
        // layer.size ≥ 0 and length > 0 make `layer.size - length` exact.
        guard fields.count == 4, let offset = fields[0], let length = fields[1], let uncompressed = fields[2],
              fields[3] == 1, layer.size >= 0, offset >= 0, length > 0, length <= maxTOCSize,
              offset <= layer.size - length, uncompressed >= 0, uncompressed <= maxTOCSize else {
            throw LazyPullError(.invalidLayer, "layer \(layer.digest): invalid zstd:chunked manifest position "
                                + "\(String(reflecting: String(position.prefix(100)))) for a blob of \(layer.size) bytes")
        }
        let checksum = try Digest(parsing: zstdChecksumAnnotations.compactMap { annotations[$0] }.first ?? "")
        let compressed = try fetch(offset, length)
        guard compressed.count == Int(length) else {
            throw LazyPullError(.invalidLayer, "layer \(layer.digest): short read of the zstd:chunked manifest")
        }
        try checksum.verify(Digest.sha256(of: compressed), what: "zstd:chunked manifest of layer \(layer.digest)")
        let source = try ZstdSource(MemorySource(compressed))
        var json = [UInt8](repeating: 0, count: Int(uncompressed))
        let n = try json.withUnsafeMutableBytes { try source.readFully(into: $0) }
        var extra = [UInt8](repeating: 0, count: 1)
        guard n == json.count, try extra.withUnsafeMutableBytes({ try source.read(into: $0) }) == 0 else {
            throw LazyPullError(.invalidLayer, "layer \(layer.digest): zstd:chunked manifest is not \(uncompressed) bytes")
        }
        // The manifest sits in a skippable frame: an 8-byte frame header precedes it.
        return (json, max(0, offset - 8))
    }
}

/// Passes at most `limit` bytes of `source` on, then fails: bounds what a small compressed
/// input may expand to.
final class BoundedSource: ByteSource {
    private let source: ByteSource
    private var left: Int64
    private let limit: Int64
    private let what: String

    init(_ source: ByteSource, limit: Int64, what: String) {
        self.source = source
        self.left = limit
        self.limit = limit
        self.what = what
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard left > 0 else {
            var probe: UInt8 = 0
            guard try withUnsafeMutableBytes(of: &probe, { try source.read(into: $0) }) == 0 else {
                throw LazyPullError(.invalidLayer, "\(what) decompresses to more than \(limit) bytes")
            }
            return 0
        }
        let want = Int(min(Int64(buffer.count), left))
        let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<want]))
        left -= Int64(n)
        return n
    }
}
