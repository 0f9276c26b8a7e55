import Foundation
@testable import LazyPullLayers
@testable import LazyPullFS
import LazyPullOCI
import Synchronization
import Testing

/// The layer host's file systems over hostile TOCs (issue 13): nothing a TOC says makes them
/// trap, recurse over its depth or take quadratic time, and one image's TOC can neither fill
/// nor read the cache another image's TOC of the same layer is served from.
@Suite("Layer file system over hostile TOCs")
struct HostileLayerFileSystemTests {
    static let layer = Digest.sha256(of: Array("a layer".utf8))
    static let modtime = "2024-01-01T00:00:00Z"

    /// One gzip member holding `data` (at most 65,535 bytes) in a stored deflate block
    /// (RFC 1952, RFC 1951 §3.2.4): what eStargz chunks are, without a compressor.
    static func gzipStored(_ data: [UInt8]) -> [UInt8] {
        precondition(data.count <= 0xFFFF)
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        crc = ~crc
        let n = UInt16(data.count)
        func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        return [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF,
                0x01, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8(~n >> 8)]
            + data + le32(crc) + le32(UInt32(data.count))
    }

    /// Counts the Range requests a file system makes.
    final class Blob: Sendable {
        let bytes: [UInt8]
        let requests = Mutex(0)
        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var reader: BlobRangeReader {
            { [self] offset, length, sink in
                requests.withLock { $0 += 1 }
                guard offset >= 0, length >= 0, offset + length <= Int64(bytes.count) else {
                    throw LazyPullError(.io, "range \(offset)+\(length) outside the blob")
                }
                try bytes[Int(offset)..<Int(offset + length)].withUnsafeBytes { try sink($0) }
            }
        }
    }

    static func fileSystem(_ toc: LayerTOC, dataEnd: Int64, blob: Blob, cache: String) throws -> LayerFileSystem {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys     // the same TOC, the same bytes
        let json = try Array(encoder.encode(toc))
        let located = LayerTOCReader.Located(format: .estargz, toc: toc, json: json, dataEnd: dataEnd)
        return try LayerFileSystem(located: located, layer: layer, cacheDirectory: cache, fetch: blob.reader)
    }

    static func file(_ name: String, contents: [UInt8], at offset: Int64, compressedLength: Int) -> TOCEntry {
        var e = TOCEntry(name: name, type: "reg")
        e.size = Int64(contents.count)
        e.offset = offset
        e.endOffset = offset + Int64(compressedLength)
        e.chunkDigest = Digest.sha256(of: contents).description
        e.modtime = modtime
        e.mode = 0o644
        return e
    }

    @Test("the last page of a 1 TiB file reads; offsets past its end and near Int64.max read nothing")
    func hugeFileLastPage() throws {
        let tmp = try TemporaryDirectory("huge")
        let page = (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let member = Self.gzipStored(page)
        let chunk = TOCValidator.maxChunkSize
        let count: Int64 = 16_384                              // 16,383 full chunks and a page
        let size = (count - 1) * chunk + 4096
        var entries: [TOCEntry] = []
        var head = TOCEntry(name: "huge", type: "reg")
        head.size = size
        head.chunkSize = chunk
        head.offset = 0
        head.endOffset = 10
        head.chunkDigest = Digest.sha256(of: [UInt8]()).description
        head.modtime = Self.modtime
        entries.append(head)
        for i in 1..<count {
            var c = TOCEntry(name: "huge", type: "chunk")
            c.chunkOffset = i * chunk
            if i == count - 1 {
                c.offset = 10
                c.endOffset = 10 + Int64(member.count)
                c.chunkDigest = Digest.sha256(of: page).description
            } else {
                c.chunkSize = chunk
                c.offset = 0
                c.endOffset = 10
                c.chunkDigest = head.chunkDigest
            }
            entries.append(c)
        }
        let blob = Blob([UInt8](repeating: 0, count: 10) + member)
        let fs = try Self.fileSystem(LayerTOC(version: 1, entries: entries), dataEnd: Int64(blob.bytes.count),
                                     blob: blob, cache: tmp.path)
        let inode = try fs.lookup(parent: 1, name: "huge").inode
        #expect(try fs.attributes(of: inode).st_size == Int(size))
        #expect(try fs.read(inode, offset: size - 4096, size: 4096) == page)
        #expect(try fs.read(inode, offset: size - 100, size: 4096) == Array(page.suffix(100)))
        #expect(try fs.read(inode, offset: size, size: 4096).isEmpty)
        #expect(try fs.read(inode, offset: Int64.max - 1, size: 4096).isEmpty)
        #expect(try fs.read(inode, offset: Int64.max, size: Int.max).isEmpty)
        #expect(throws: (any Error).self) { try fs.read(inode, offset: -1, size: 4096) }
        #expect(blob.requests.withLock { $0 } == 1)
    }

    @Test("two TOCs of one layer digest have cache files of their own; the same TOC shares them")
    func cacheBelongsToItsTOC() throws {
        let tmp = try TemporaryDirectory("cache-toc")
        let victimBytes = Array("the victim's program\n".utf8)
        let attackerBytes = Array("the attacker's bytes\n".utf8)
        func layer(_ contents: [UInt8]) -> (LayerTOC, Blob) {
            let member = Self.gzipStored(contents)
            let toc = LayerTOC(version: 1, entries: [Self.file("bin/app", contents: contents, at: 0, compressedLength: member.count)])
            return (toc, Blob(member))
        }
        let (victimTOC, victimBlob) = layer(victimBytes)
        let (attackerTOC, attackerBlob) = layer(attackerBytes)
        let cache = "\(tmp.path)/cache"

        // The attacker's image is read first and fills its cache.
        let attacker = try Self.fileSystem(attackerTOC, dataEnd: Int64(attackerBlob.bytes.count), blob: attackerBlob, cache: cache)
        let attackerApp = try attacker.lookup(parent: 1, name: "bin").inode
        let attackerFile = try attacker.lookup(parent: attackerApp, name: "app").inode
        #expect(try attacker.read(attackerFile, offset: 0, size: 4096) == attackerBytes)

        // The victim's image, same layer digest, its own TOC: its own bytes, fetched.
        let victim = try Self.fileSystem(victimTOC, dataEnd: Int64(victimBlob.bytes.count), blob: victimBlob, cache: cache)
        let bin = try victim.lookup(parent: 1, name: "bin").inode
        let app = try victim.lookup(parent: bin, name: "app").inode
        #expect(try victim.read(app, offset: 0, size: 4096) == victimBytes)
        #expect(victimBlob.requests.withLock { $0 } == 1)
        #expect(victim.tocDigest != attacker.tocDigest)

        let files = try FileManager.default.contentsOfDirectory(atPath: "\(cache)/sha256").filter { $0.hasSuffix(".data") }.sorted()
        let expected = [attacker, victim].map { "\(LayerCacheFiles.baseName(layer: Self.layer, toc: $0.tocDigest)).data" }.sorted()
        #expect(files == expected)
        #expect(files.allSatisfy { LayerCacheFiles.layerHex(ofFile: $0) == Self.layer.encoded })

        // A second image with the victim's TOC shares its cache: nothing is fetched again.
        let sharingBlob = Blob(victimBlob.bytes)
        let sharing = try Self.fileSystem(victimTOC, dataEnd: Int64(sharingBlob.bytes.count), blob: sharingBlob, cache: cache)
        let sharedApp = try sharing.lookup(parent: try sharing.lookup(parent: 1, name: "bin").inode, name: "app").inode
        #expect(try sharing.read(sharedApp, offset: 0, size: 4096) == victimBytes)
        #expect(sharingBlob.requests.withLock { $0 } == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(cache)/sha256").filter { $0.hasSuffix(".data") }.count == 2)
    }

    @Test("40,000 entries of one name: the last one wins, one directory entry")
    func duplicateNames() throws {
        let tmp = try TemporaryDirectory("dups")
        let entries = (0..<40_000).map { i in
            var e = TOCEntry(name: "dup", type: "reg")
            e.size = 0
            e.uid = i
            e.modtime = Self.modtime
            return e
        }
        let fs = try Self.fileSystem(LayerTOC(version: 1, entries: entries), dataEnd: 0, blob: Blob([]), cache: tmp.path)
        #expect(try fs.directoryEntries(1, from: 0, limit: 100).map(\.name) == ["dup"])
        #expect(try fs.lookup(parent: 1, name: "dup").attributes.st_uid == 39_999)
        // A directory position is whatever a process seeks to.
        #expect(try fs.directoryEntries(1, from: -1, limit: 100).isEmpty)
        #expect(try fs.directoryEntries(1, from: Int.max, limit: Int.max).isEmpty)
        #expect(try fs.directoryEntries(1, from: 0, limit: Int.max).count == 1)
    }

    /// A layer of the path `a/a/…/a` (`depth` directories) holding `files`, with `whiteouts`.
    static func deepLayer(depth: Int, files: [String], whiteouts: [String] = [], cache: String) throws -> LayerFileSystem {
        let directory = Array(repeating: "a", count: depth).joined(separator: "/")
        var entries: [TOCEntry] = []
        for name in files + whiteouts.map({ ".wh." + $0 }) {
            var e = TOCEntry(name: "\(directory)/\(name)", type: "reg")
            e.size = 0
            e.modtime = Self.modtime
            entries.append(e)
        }
        return try Self.fileSystem(LayerTOC(version: 1, entries: entries), dataEnd: 0, blob: Blob([]), cache: cache)
    }

    @Test("the merged tree of layers as deep as a TOC may go is built without recursion; 30,000 deep is refused")
    func deepMergedTree() throws {
        let tmp = try TemporaryDirectory("deep")
        let depth = TOCValidator.maxPathDepth - 1
        let lower = try Self.deepLayer(depth: depth, files: ["f1", "f3"], cache: tmp.path)
        let upper = try Self.deepLayer(depth: depth, files: ["f2"], whiteouts: ["f1"], cache: tmp.path)
        let merged = MergedFileSystem(layers: [lower, upper])
        var inode: UInt64 = 1
        for _ in 0..<depth { inode = try merged.lookup(parent: inode, name: "a").inode }
        #expect(try merged.directoryEntries(inode, from: 0, limit: 10).map(\.name).sorted() == ["f2", "f3"])
        #expect(throws: (any Error).self) { try merged.lookup(parent: inode, name: "f1") }

        #expect {
            _ = try Self.deepLayer(depth: 30_000, files: ["f"], cache: tmp.path)
        } throws: { ($0 as? LazyPullError)?.code == .hostileLayer }
    }

    @Test("a merged directory with 40,000 whiteouts over 40,000 names ends empty")
    func manyWhiteouts() throws {
        let tmp = try TemporaryDirectory("whiteouts")
        let names = (0..<40_000).map { "n\($0)" }
        let lower = try Self.deepLayer(depth: 1, files: names, cache: tmp.path)
        let upper = try Self.deepLayer(depth: 1, files: ["kept"], whiteouts: names, cache: tmp.path)
        let merged = MergedFileSystem(layers: [lower, upper])
        let a = try merged.lookup(parent: 1, name: "a").inode
        #expect(try merged.directoryEntries(a, from: 0, limit: 10).map(\.name) == ["kept"])
    }
}
