import CZlib
import Foundation
import LazyPullOCI
import Testing
@testable import LazyPullLayers

/// Builds tar streams byte by byte, so the reader is checked against the format, not
/// against another implementation.
struct TarBuilder {
    var bytes: [UInt8] = []

    static func header(name: String, type: UInt8, size: Int, mode: Int = 0o644, linkName: String = "",
                       uid: Int = 0, mtime: Int = 1_700_000_000, base256Size: Bool = false) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, _ offset: Int, _ length: Int) {
            let b = Array(s.utf8.prefix(length))
            h.replaceSubrange(offset..<(offset + b.count), with: b)
        }
        func octal(_ v: Int, _ offset: Int, _ length: Int) {
            put(String(v, radix: 8).leftPadded(to: length - 1), offset, length - 1)
        }
        put(name, 0, 100)
        octal(mode, 100, 8); octal(uid, 108, 8); octal(0, 116, 8)
        if base256Size {
            h[124] = 0x80
            var v = size
            for i in stride(from: 135, to: 124, by: -1) { h[i] = UInt8(v & 0xff); v >>= 8 }
        } else {
            octal(size, 124, 12)
        }
        octal(mtime, 136, 12)
        h[156] = type
        put(linkName, 157, 100)
        put("ustar\0", 257, 6); put("00", 263, 2)
        for i in 148..<156 { h[i] = 0x20 }
        let sum = h.reduce(0) { $0 + Int($1) }
        put(String(sum, radix: 8).leftPadded(to: 6) + "\0 ", 148, 8)
        return h
    }

    mutating func add(name: String, type: UInt8 = UInt8(ascii: "0"), content: [UInt8] = [], mode: Int = 0o644,
                      linkName: String = "", base256Size: Bool = false) {
        bytes += Self.header(name: name, type: type, size: content.count, mode: mode, linkName: linkName, base256Size: base256Size)
        bytes += content
        bytes += [UInt8](repeating: 0, count: (512 - content.count % 512) % 512)
    }

    mutating func addPAX(_ records: [(String, [UInt8])]) {
        var data: [UInt8] = []
        for (key, value) in records {
            let body = Array(" \(key)=".utf8) + value + [0x0a]
            var length = body.count + 1
            while String(length).count + body.count != length { length = String(length).count + body.count }
            data += Array(String(length).utf8) + body
        }
        add(name: "PaxHeaders/x", type: UInt8(ascii: "x"), content: data)
    }

    mutating func addGNULongName(_ name: String) {
        add(name: "././@LongLink", type: UInt8(ascii: "L"), content: Array(name.utf8) + [0])
    }

    mutating func end() { bytes += [UInt8](repeating: 0, count: 1024) }
}

extension String {
    func leftPadded(to n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

final class BytesSource: ByteSource {
    let bytes: [UInt8]
    var offset = 0
    let step: Int
    init(_ bytes: [UInt8], step: Int = 7) { self.bytes = bytes; self.step = step }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, bytes.count - offset, step)
        bytes[offset..<(offset + n)].withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n) }
        offset += n
        return n
    }
}

func readAll(_ tar: TarReader) throws -> [(TarEntry, [UInt8])] {
    var out: [(TarEntry, [UInt8])] = []
    while let e = try tar.next() {
        var content: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 100)
        while true {
            let n = try buf.withUnsafeMutableBytes { try tar.readContent(into: $0) }
            if n == 0 { break }
            content += buf[..<n]
        }
        out.append((e, content))
    }
    return out
}

@Suite("Tar reader")
struct TarReaderTests {
    @Test func readsUstarPAXAndGNUExtensions() throws {
        var t = TarBuilder()
        t.add(name: "dir/", type: UInt8(ascii: "5"), mode: 0o755)
        t.add(name: "dir/file", content: Array("hello".utf8), mode: 0o4755)
        let long = String(repeating: "n", count: 180)
        t.addGNULongName("dir/" + long)
        t.add(name: "truncated", content: [1, 2, 3])
        t.addPAX([("path", Array("dir/ünï/pax-name".utf8)), ("SCHILY.xattr.security.capability", [0x01, 0x00, 0xff]),
                  ("SCHILY.xattr.user.k", Array("v".utf8)), ("mtime", Array("1700000000.25".utf8)), ("uid", Array("2500000".utf8))])
        t.add(name: "ignored", content: Array("x".utf8))
        t.add(name: "dir/link", type: UInt8(ascii: "1"), linkName: "dir/file")
        t.add(name: "dir/sym", type: UInt8(ascii: "2"), linkName: "../elsewhere")
        t.add(name: "big", content: Array(repeating: 7, count: 1000), base256Size: true)
        t.end()
        let entries = try readAll(TarReader(BytesSource(t.bytes)))
        #expect(entries.map(\.0.name) == ["dir/", "dir/file", "dir/" + long, "dir/ünï/pax-name", "dir/link", "dir/sym", "big"])
        #expect(entries[1].0.mode == 0o4755 && entries[1].1 == Array("hello".utf8))
        #expect(entries[2].1 == [1, 2, 3])
        let pax = entries[3].0
        #expect(pax.uid == 2_500_000)
        #expect(pax.mtime.seconds == 1_700_000_000 && pax.mtime.nanoseconds == 250_000_000)
        #expect(pax.xattrs.map(\.name) == ["security.capability", "user.k"])
        #expect(pax.xattrs[0].value == [0x01, 0x00, 0xff])
        #expect(entries[4].0.type == .hardlink && entries[4].0.linkName == "dir/file")
        #expect(entries[5].0.type == .symlink && entries[5].0.linkName == "../elsewhere")
        #expect(entries[6].1.count == 1000)
    }

    @Test func acceptsStreamEndingAfterLastContent() throws {
        var t = TarBuilder()
        t.add(name: "a", content: Array("xyz".utf8))
        let unpadded = Array(t.bytes.prefix(512 + 3))
        let entries = try readAll(TarReader(BytesSource(unpadded)))
        #expect(entries.map(\.0.name) == ["a"] && entries[0].1 == Array("xyz".utf8))
    }

    static let corrupt: [(String, [UInt8])] = {
        var good = TarBuilder()
        good.add(name: "f", content: Array(repeating: 1, count: 600))
        var badSum = good.bytes
        badSum[0] ^= 0xff
        let truncated = Array(good.bytes.prefix(700))
        let partialPadding = Array(good.bytes.prefix(512 + 600 + 10))
        var sparse = TarBuilder()
        sparse.add(name: "s", type: UInt8(ascii: "S"))
        var badPAX = TarBuilder()
        badPAX.add(name: "p", type: UInt8(ascii: "x"), content: Array("99 path=x\n".utf8))
        return [("checksum mismatch", badSum), ("ends inside file content", truncated), ("ends inside file content", partialPadding),
                ("sparse", sparse.bytes), ("malformed PAX", badPAX.bytes),
                ("ends inside a header block", Array(repeating: 0x41, count: 100))]
    }()

    @Test(arguments: corrupt)
    func rejectsCorruptStreams(reason: String, bytes: [UInt8]) {
        #expect { _ = try readAll(TarReader(BytesSource(bytes))) } throws: {
            guard let e = $0 as? LazyPullError else { return false }
            return e.code == .invalidLayer && e.message.contains(reason)
        }
    }
}

@Suite("Layer entry names")
struct EntryNameTests {
    static let accepted: [(String, [String])] = [
        ("a/b/c", ["a", "b", "c"]), ("./a//b/", ["a", "b"]), ("./", []), ("a/./b", ["a", "b"]),
        ("ünï/日本", ["ünï", "日本"]), ("...", ["..."]), (".a/..b/.", [".a", "..b"]),
        (String(repeating: "n", count: 255), [String(repeating: "n", count: 255)]),
    ]

    @Test(arguments: accepted)
    func cleans(name: String, expected: [String]) throws {
        #expect(try LayerUnpacker.components(of: name, entry: name) == expected)
    }

    @Test(arguments: ["/etc/passwd", "../x", "a/../../x", "a/..", "//abs",
                      // Names are bytes: C calls stop at a NUL, so "..\0x" is ".." to them.
                      "..\u{0}x/..\u{0}x/etc/passwd", "a/..\u{0}", "\u{0}", ".wh...\u{0}x", "a\u{0}b", "/\u{0}"])
    func rejectsEscapes(name: String) {
        #expect { try LayerUnpacker.components(of: name, entry: name) } throws: {
            ($0 as? LazyPullError)?.code == .hostileLayer
        }
    }

    @Test(arguments: ["a/" + String(repeating: "n", count: 256),
                      String(repeating: "a/", count: LayerUnpacker.maxPathDepth) + "b",
                      String(repeating: "n", count: 200) + String(repeating: "/nn", count: 1300)])
    func rejectsLongComponentsNamesAndDepth(name: String) {
        #expect { try LayerUnpacker.components(of: name, entry: name) } throws: {
            ($0 as? LazyPullError)?.code == .invalidLayer && !(($0 as? LazyPullError)?.message.contains("\n") ?? true)
        }
    }

    @Test func acceptsTheLimits() throws {
        let deep = String(repeating: "a/", count: LayerUnpacker.maxPathDepth - 1) + "b"
        #expect(try LayerUnpacker.components(of: deep, entry: deep).count == LayerUnpacker.maxPathDepth)
        let long = String(repeating: "n", count: 96) + String(repeating: "/nnn", count: 1000)   // 4096 bytes
        #expect(try LayerUnpacker.components(of: long, entry: long).count == 1001)
        // "." and empty components do not count towards the depth.
        let dotted = String(repeating: "./", count: 1500) + "x"
        #expect(try LayerUnpacker.components(of: dotted, entry: dotted) == ["x"])
    }
}

@Suite("Decompression")
struct DecompressionTests {
    func gzip(_ data: [UInt8]) -> [UInt8] {
        var stream = z_stream()
        deflateInit2_(&stream, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        defer { deflateEnd(&stream) }
        var input = data
        var out = [UInt8](repeating: 0, count: data.count + 1024)
        input.withUnsafeMutableBufferPointer { inBuf in
            out.withUnsafeMutableBufferPointer { outBuf in
                stream.next_in = inBuf.baseAddress
                stream.avail_in = UInt32(inBuf.count)
                stream.next_out = outBuf.baseAddress
                stream.avail_out = UInt32(outBuf.count)
                deflate(&stream, Z_FINISH)
            }
        }
        return Array(out[..<Int(stream.total_out)])
    }

    static let decoders: [@Sendable (ByteSource) throws -> ByteSource] = [{ try GzipSource($0) }, { IsalGzipSource($0) }]

    @Test(arguments: 0..<2)
    func readsMultiMemberGzip(decoder: Int) throws {
        let a = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 * 7 % 251) }, b = Array("tail".utf8)
        let source = try Self.decoders[decoder](BytesSource(gzip(a) + gzip(b), step: 4096))
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 3000)
        while true {
            let n = try buf.withUnsafeMutableBytes { try source.read(into: $0) }
            if n == 0 { break }
            out += buf[..<n]
        }
        #expect(out == a + b)
    }

    @Test(arguments: 0..<2)
    func rejectsTruncatedAndCorruptGzip(decoder: Int) {
        let whole = gzip((0..<50_000).map { UInt8(truncatingIfNeeded: $0 * 13 % 253) })
        #expect(throws: LazyPullError.self) {
            _ = try Self.decoders[decoder](BytesSource(Array(whole.prefix(whole.count / 2)), step: 512)).drain()
        }
        var badCRC = whole
        badCRC[whole.count - 6] ^= 0xff
        #expect(throws: LazyPullError.self) { _ = try Self.decoders[decoder](BytesSource(badCRC, step: 512)).drain() }
        var badData = whole
        badData[12] ^= 0xff
        #expect(throws: LazyPullError.self) { _ = try Self.decoders[decoder](BytesSource(badData, step: 512)).drain() }
    }
}
