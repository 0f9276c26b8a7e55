import Foundation
import LazyPullOCI
import Testing
@testable import LazyPullLayers

/// The TOC validator: a valid TOC becomes checked values; each hostile entry (issue 13's list
/// and more of the same classes) is a thrown one-line LazyPullError naming the layer, never
/// a trap.
@Suite("TOC validator")
struct TOCValidatorTests {
    static let layer = Digest.sha256(of: Array("layer".utf8))
    static let chunkDigest = Digest.sha256(of: Array("chunk".utf8)).description
    static let dataEnd: Int64 = 1000

    static func entry(_ name: String, _ type: String, _ body: (inout TOCEntry) -> Void = { _ in }) -> TOCEntry {
        var e = TOCEntry(name: name, type: type)
        e.modtime = "2024-05-06T07:08:09Z"
        e.mode = 0o755
        body(&e)
        return e
    }

    /// A directory, a one-chunk file, a two-chunk file, a link, a device, a hard link.
    static var valid: LayerTOC {
        LayerTOC(version: 1, entries: [
            entry("etc/", "dir"),
            entry("etc/hosts", "reg") { $0.size = 10; $0.offset = 0; $0.chunkDigest = chunkDigest; $0.mode = 0o4644; $0.uid = 1000; $0.gid = 100 },
            entry("big", "reg") { $0.size = 8; $0.chunkSize = 4; $0.offset = 100; $0.chunkDigest = chunkDigest },
            entry("big", "chunk") { $0.chunkOffset = 4; $0.chunkSize = 4; $0.offset = 200; $0.endOffset = 250; $0.chunkDigest = chunkDigest },
            entry("link", "symlink") { $0.linkName = "etc/hosts" },
            entry("dev/null", "char") { $0.devMajor = 1; $0.devMinor = 3 },
            entry("hosts2", "hardlink") { $0.linkName = "etc/hosts" },
            entry("x", "reg") { $0.size = 0; $0.xattrs = ["user.a": "YQ=="] },
        ])
    }

    @Test("a valid TOC passes, with its values checked and its chunks' ends found")
    func validPasses() throws {
        let toc = try TOCValidator.validate(Self.valid, layer: Self.layer, dataEnd: Self.dataEnd)
        #expect(toc.entries.count == 7)
        #expect(toc.regularBytes == 18)
        let hosts = toc.entries[1]
        #expect(hosts.path == ["etc", "hosts"])
        #expect(hosts.uid == 1000 && hosts.gid == 100 && hosts.permissions == 0o4644)
        #expect(hosts.modificationTime == 1_714_979_289)
        #expect(hosts.chunks == [ValidatedTOC.Chunk(fileOffset: 0, size: 10, compressedStart: 0, compressedEnd: 100,
                                                    innerOffset: 0, digest: try Digest(parsing: Self.chunkDigest))])
        let big = toc.entries[2]
        #expect(big.chunks.map(\.fileOffset) == [0, 4])
        #expect(big.chunks.map(\.compressedEnd) == [200, 250])
        #expect(toc.entries[4].deviceMajor == 1 && toc.entries[4].deviceMinor == 3)
        #expect(toc.entries[5].hardlinkTarget == ["etc", "hosts"])
        #expect(toc.entries[6].xattrs == [ValidatedTOC.ExtendedAttribute(name: "user.a", value: [0x61])])
        // The last chunk before the TOC runs to the end of the data.
        var last = Self.valid
        last.entries[3].endOffset = nil
        #expect(try TOCValidator.validate(last, layer: Self.layer, dataEnd: Self.dataEnd).entries[2].chunks[1].compressedEnd == Self.dataEnd)
    }

    /// One hostile change to the valid TOC.
    struct Case: Sendable, CustomTestStringConvertible {
        var label: String
        var dataEnd: Int64 = TOCValidatorTests.dataEnd
        var change: @Sendable (inout LayerTOC) -> Void
        var testDescription: String { label }
    }

    static let hostile: [Case] = [
        Case(label: "uid -1") { $0.entries[1].uid = -1 },
        Case(label: "gid -1") { $0.entries[1].gid = -1 },
        Case(label: "uid 2^32") { $0.entries[1].uid = 1 << 32 },
        Case(label: "mode -1") { $0.entries[1].mode = -1 },
        Case(label: "mode 2^40") { $0.entries[1].mode = 1 << 40 },
        Case(label: "devMajor 2^32") { $0.entries[5].devMajor = 1 << 32 },
        Case(label: "devMajor past dev_t") { $0.entries[5].devMajor = 4096 },
        Case(label: "devMinor -1") { $0.entries[5].devMinor = -1 },
        Case(label: "size near Int64.max") { $0.entries[1].size = Int64.max - 1 },
        Case(label: "negative size") { $0.entries[1].size = -5 },
        Case(label: "sizes summing past Int64.max") {
            $0.entries[1].size = Int64.max / 2 + 1; $0.entries[1].chunkSize = 4
            $0.entries[2].size = Int64.max / 2 + 1
        },
        Case(label: "chunkOffset past the file's size") { $0.entries[3].chunkOffset = 100 },
        Case(label: "chunkOffset near Int64.max") { $0.entries[3].chunkOffset = Int64.max }, 
        Case(label: "gap between chunks") { $0.entries[3].chunkOffset = 5; $0.entries[3].chunkSize = 3 },
        Case(label: "overlapping chunks") { $0.entries[3].chunkOffset = 3; $0.entries[3].chunkSize = 5 },
        Case(label: "chunk past the end of its file") { $0.entries[3].chunkSize = 5 },
        Case(label: "chunks short of the file's size") { $0.entries[3].chunkSize = 3 },
        Case(label: "file's chunks missing") { $0.entries.remove(at: 3) },
        Case(label: "first chunk not at 0") { $0.entries[1].chunkOffset = 2 },
        Case(label: "negative chunkSize") { $0.entries[2].chunkSize = -4 },
        Case(label: "negative innerOffset") { $0.entries[1].innerOffset = -1 },
        Case(label: "innerOffset near Int64.max") { $0.entries[1].innerOffset = Int64.max - 5 },
        Case(label: "chunkSize 2^44") { $0.entries[1].size = 1 << 44; $0.entries[1].chunkSize = 1 << 44 },
        Case(label: "one chunk of 2^44 bytes without chunkSize") { $0.entries[1].size = 1 << 44 },
        Case(label: "offset past the data end") { $0.entries[1].offset = 5000 },
        Case(label: "offset at the data end") { $0.entries[1].offset = 1000 },
        Case(label: "negative offset") { $0.entries[1].offset = -1 },
        Case(label: "end offset before the offset") { $0.entries[3].endOffset = 150 },
        Case(label: "end offset past the data end") { $0.entries[3].endOffset = 1001 },
        Case(label: "compressed chunk too large", dataEnd: 1 << 40) { $0.entries[3].endOffset = 1 << 39 },
        Case(label: "chunk without an offset") { $0.entries[3].offset = nil },
        Case(label: "chunk without a digest") { $0.entries[3].chunkDigest = nil },
        Case(label: "chunk digest not sha256") { $0.entries[3].chunkDigest = "md5:00" },
        Case(label: "chunk entry without its file") { $0.entries.insert(entry("big", "chunk") { $0.offset = 1 }, at: 1) },
        Case(label: "NUL in a name") { $0.entries[1].name = "etc/\0/../../x" },
        Case(label: "'..' in a name") { $0.entries[1].name = "etc/../../x" },
        Case(label: "absolute name") { $0.entries[1].name = "/etc/x" },
        Case(label: "NUL in a hard link target") { $0.entries[6].linkName = "etc\0/hosts" },
        Case(label: "'..' in a hard link target") { $0.entries[6].linkName = "../etc/hosts" },
        Case(label: "NUL in a symlink target") { $0.entries[4].linkName = "a\0b" },
        Case(label: "component longer than 255 bytes") { $0.entries[1].name = String(repeating: "a", count: 256) },
        Case(label: "name longer than 4096 bytes") { $0.entries[1].name = String(repeating: "a/", count: 2100) + "b" },
        Case(label: "too deep") { $0.entries[1].name = String(repeating: "a/", count: TOCValidator.maxPathDepth) + "b" },
        Case(label: "30,000 deep") { $0.entries[1].name = String(repeating: "a/", count: 30_000) + "b" },
        Case(label: "too many entries") {
            $0.entries = Array(repeating: entry("d", "dir"), count: TOCValidator.maxEntries + 1)
        },
        Case(label: "xattr name with NUL") { $0.entries[7].xattrs = ["user.\0a": "YQ=="] },
        Case(label: "xattr name longer than 255 bytes") { $0.entries[7].xattrs = [String(repeating: "u", count: 256): "YQ=="] },
        Case(label: "xattr value not base64") { $0.entries[7].xattrs = ["user.a": "!!"] },
        Case(label: "xattr value over 64 KiB") {
            $0.entries[7].xattrs = ["user.a": Data(count: (64 << 10) + 1).base64EncodedString()]
        },
        Case(label: "unknown type") { $0.entries[7].type = "socket" },
        Case(label: "modtime not RFC 3339") { $0.entries[7].modtime = "yesterday" },
        Case(label: "root that is a file") { $0.entries[7].name = "./" },
        Case(label: "negative data end", dataEnd: -1) { _ in },
    ]

    @Test("a hostile entry is a one-line error naming the layer", arguments: hostile)
    func refusesHostile(_ hostileCase: Case) throws {
        var toc = Self.valid
        hostileCase.change(&toc)
        let error = try #require(throws: LazyPullError.self) {
            try TOCValidator.validate(toc, layer: Self.layer, dataEnd: hostileCase.dataEnd)
        }
        #expect(error.code == .hostileLayer || error.code == .invalidLayer)
        #expect(error.message.hasPrefix("layer \(Self.layer)"), "\(error.message)")
        #expect(!error.message.contains("\n") && !error.message.contains("\0"))
        #expect(error.message.count < 1000)
    }

    @Test("entries at the limits pass: the deepest path, the largest chunk, the largest xattr")
    func limitsPass() throws {
        var toc = Self.valid
        toc.entries[1].name = String(repeating: "a/", count: TOCValidator.maxPathDepth - 1) + "b"
        toc.entries[2].size = TOCValidator.maxChunkSize + 4
        toc.entries[2].chunkSize = TOCValidator.maxChunkSize
        toc.entries[3].chunkOffset = TOCValidator.maxChunkSize
        toc.entries[7].xattrs = ["user.a": Data(count: 64 << 10).base64EncodedString()]
        let validated = try TOCValidator.validate(toc, layer: Self.layer, dataEnd: Self.dataEnd)
        #expect(validated.entries[1].path.count == TOCValidator.maxPathDepth)
        #expect(validated.entries[2].chunks.map(\.size) == [TOCValidator.maxChunkSize, 4])
    }
}
