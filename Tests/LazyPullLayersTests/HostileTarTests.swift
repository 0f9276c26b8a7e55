import CLazyPullShims
import Foundation
import LazyPullOCI
import Testing
@testable import LazyPullLayers

/// A scratch directory laid out so that a layer escaping its directory by one or two `..`
/// lands on canaries: `base/{etc/passwd, canary/file, outer/{canary, layer/}}`, the layer
/// being unpacked into `base/outer/layer`. Removed when the test ends.
final class CanaryDirectory {
    let base: String
    var layer: String { base + "/outer/layer" }

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/lazypull-hostile-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw LazyPullError.io("cannot create", path: "temp dir", errno: errno) }
        base = String(cString: made)
        let fm = FileManager.default
        for dir in ["etc", "canary", "outer", "outer/layer"] {
            try fm.createDirectory(atPath: base + "/" + dir, withIntermediateDirectories: true)
        }
        for file in ["etc/passwd", "canary/file", "outer/canary"] {
            guard fm.createFile(atPath: base + "/" + file, contents: Data("canary \(file)\n".utf8),
                                attributes: [.posixPermissions: 0o644]) else {
                throw LazyPullError(.io, "cannot create canary \(file)")
            }
        }
    }

    deinit {
        // The layer may hold trees deeper than PATH_MAX: empty it without paths first.
        let fd = open(layer, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd >= 0 {
            try? LayerUnpacker.removeContents(of: fd)
            close(fd)
        }
        try? FileManager.default.removeItem(atPath: base)
    }

    /// Everything outside the layer directory: path, type, mode, owner, size and content.
    func snapshot() throws -> [String] {
        var out: [String] = []
        var pending = [""]
        while let dir = pending.popLast() {
            let full = base + dir
            for name in try FileManager.default.contentsOfDirectory(atPath: full).sorted() {
                let path = dir + "/" + name
                if path == "/outer/layer" { continue }
                var st = stat()
                guard lstat(base + path, &st) == 0 else { throw LazyPullError.io("cannot stat", path: path, errno: errno) }
                var line = "\(path) \(String(st.st_mode, radix: 8)) \(st.st_uid):\(st.st_gid) \(st.st_size)"
                if (st.st_mode & S_IFMT) == S_IFREG {
                    line += " " + (try String(contentsOfFile: base + path, encoding: .utf8))
                }
                if (st.st_mode & S_IFMT) == S_IFDIR { pending.append(path) }
                out.append(line)
            }
        }
        return out.sorted()
    }

    /// Unpacks `tar` into the layer directory.
    func unpack(_ tar: [UInt8]) throws {
        let unpacker = try LayerUnpacker(directory: layer)
        try unpacker.unpack(TarReader(BytesSource(tar, step: 4096)))
    }
}

/// A ByteSource that makes its bytes on demand and counts what was read: a hostile stream
/// of hundreds of MiB costs nothing to build, and the test sees how far the reader went.
final class GeneratedSource: ByteSource {
    private let chunk: (Int) -> [UInt8]?
    private var current: [UInt8] = []
    private var offset = 0
    private var index = 0
    private(set) var bytesRead = 0

    /// `chunk(i)` is the i-th piece of the stream, nil after the last.
    init(_ chunk: @escaping (Int) -> [UInt8]?) { self.chunk = chunk }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while offset == current.count {
            guard let next = chunk(index) else { return 0 }
            index += 1
            current = next
            offset = 0
        }
        let n = min(buffer.count, current.count - offset)
        current[offset..<(offset + n)].withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n) }
        offset += n
        bytesRead += n
        return n
    }
}

/// PAX records as TarBuilder.addPAX writes them, for a header of any type.
func paxData(_ records: [(String, [UInt8])]) -> [UInt8] {
    var data: [UInt8] = []
    for (key, value) in records {
        let body = Array(" \(key)=".utf8) + value + [0x0a]
        var length = body.count + 1
        while String(length).count + body.count != length { length = String(length).count + body.count }
        data += Array(String(length).utf8) + body
    }
    return data
}

/// Whether `error` is the one-line refusal of a hostile or invalid layer.
func isRefusal(_ error: any Error, _ codes: Set<LazyPullError.Code> = [.hostileLayer, .invalidLayer],
               mentioning text: String? = nil) -> Bool {
    guard let e = error as? LazyPullError, codes.contains(e.code), !e.message.isEmpty,
          !e.message.contains("\n"), !e.message.contains("\0") else { return false }
    return text.map { e.message.contains($0) } ?? true
}

/// One hostile archive and the error code it must get; named by `what` in test output.
struct HostileCase: Sendable, CustomTestStringConvertible {
    var what: String
    var code: LazyPullError.Code
    var tar: [UInt8]
    var testDescription: String { what }
}

@Suite("Hostile tar layers")
struct HostileTarTests {
    /// Hostile archives: each must be refused before anything outside the layer changes.
    static let hostile: [HostileCase] = {
        var cases: [(String, LazyPullError.Code, [UInt8])] = []
        func archive(_ build: (inout TarBuilder) -> Void) -> [UInt8] {
            var t = TarBuilder()
            build(&t)
            t.end()
            return t.bytes
        }
        cases.append(("NUL in PAX path", .hostileLayer, archive {
            $0.addPAX([("path", Array("..\u{0}x/..\u{0}x/etc/passwd".utf8))])
            $0.add(name: "innocent", content: Array("root::0:0::/:/bin/sh\n".utf8), mode: 0o4755)
        }))
        cases.append(("NUL in PAX path, one level", .hostileLayer, archive {
            $0.addPAX([("path", Array("..\u{0}x/canary".utf8))])
            $0.add(name: "innocent", content: Array("owned".utf8))
        }))
        cases.append(("NUL in PAX path of a directory", .hostileLayer, archive {
            $0.addPAX([("path", Array("..\u{0}x/..\u{0}x/canary/".utf8))])
            $0.add(name: "d/", type: UInt8(ascii: "5"), mode: 0o777)
        }))
        cases.append(("NUL in hardlink linkpath", .hostileLayer, archive {
            $0.addPAX([("linkpath", Array("..\u{0}x/canary".utf8))])
            $0.add(name: "link", type: UInt8(ascii: "1"))
        }))
        cases.append(("NUL in symlink linkpath", .hostileLayer, archive {
            $0.addPAX([("linkpath", Array("..\u{0}x/..\u{0}x/etc".utf8))])
            $0.add(name: "sym", type: UInt8(ascii: "2"))
            $0.add(name: "sym/passwd", content: Array("owned".utf8))
        }))
        cases.append(("NUL in GNU long name", .hostileLayer, archive {
            $0.add(name: "././@LongLink", type: UInt8(ascii: "L"), content: Array("..\u{0}x/canary\u{0}".utf8))
            $0.add(name: "innocent", content: Array("owned".utf8))
        }))
        cases.append(("NUL in GNU long link", .hostileLayer, archive {
            $0.add(name: "././@LongLink", type: UInt8(ascii: "K"), content: Array("..\u{0}x/canary\u{0}".utf8))
            $0.add(name: "link", type: UInt8(ascii: "1"))
        }))
        cases.append(("NUL in whiteout name", .hostileLayer, archive {
            // C calls would see ".wh..": a whiteout of the layer's parent, removing the canary.
            $0.addPAX([("path", Array(".wh...\u{0}x".utf8))])
            $0.add(name: "innocent")
        }))
        cases.append(("NUL in whiteout name in a directory", .hostileLayer, archive {
            $0.add(name: "d/", type: UInt8(ascii: "5"), mode: 0o755)
            $0.addPAX([("path", Array("d/.wh...\u{0}/".utf8))])
            $0.add(name: "innocent")
        }))
        cases.append(("NUL in xattr name", .hostileLayer, archive {
            $0.addPAX([("SCHILY.xattr.trusted.overlay.opaque\u{0}user.x", Array("y".utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("NUL in PAX keyword", .hostileLayer, archive {
            $0.addPAX([("pa\u{0}th", Array("x".utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("absolute PAX path", .hostileLayer, archive {
            $0.addPAX([("path", Array("/tmp/lazypull-owned".utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("empty symlink target", .invalidLayer, archive {
            $0.add(name: "sym", type: UInt8(ascii: "2"))
        }))
        cases.append(("hardlink to the layer root", .hostileLayer, archive {
            $0.add(name: "link", type: UInt8(ascii: "1"), linkName: "./")
        }))
        cases.append(("entry through a symlink to the outside", .hostileLayer, archive {
            $0.add(name: "up", type: UInt8(ascii: "2"), linkName: "../..")
            $0.add(name: "up/canary/file", content: Array("owned".utf8))
        }))
        cases.append(("dot-dot hardlink", .hostileLayer, archive {
            $0.add(name: "link", type: UInt8(ascii: "1"), linkName: "../canary")
        }))
        cases.append(("PAX record length near Int64.max", .invalidLayer, archive {
            $0.add(name: "PaxHeaders/x", type: UInt8(ascii: "x"), content: Array("9223372036854775800 path=x\n".utf8))
            $0.add(name: "f", content: [1])
        }))
        cases.append(("PAX record length Int64.max", .invalidLayer, archive {
            $0.add(name: "PaxHeaders/x", type: UInt8(ascii: "x"), content: Array("9223372036854775807 path=x\n".utf8))
            $0.add(name: "f", content: [1])
        }))
        cases.append(("PAX record length shorter than its prefix", .invalidLayer, archive {
            $0.add(name: "PaxHeaders/x", type: UInt8(ascii: "x"), content: Array("3 path=x\n".utf8))
            $0.add(name: "f", content: [1])
        }))
        cases.append(("signed PAX record length", .invalidLayer, archive {
            $0.add(name: "PaxHeaders/x", type: UInt8(ascii: "x"), content: Array("-9 a=b\n".utf8))
            $0.add(name: "f", content: [1])
        }))
        cases.append(("name longer than PATH_MAX", .invalidLayer, archive {
            $0.addPAX([("path", Array(repeating: UInt8(ascii: "a"), count: 200) + Array(String(repeating: "/a", count: 2000).utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("symlink target longer than PATH_MAX", .invalidLayer, archive {
            $0.addPAX([("linkpath", Array(repeating: UInt8(ascii: "a"), count: 4097))])
            $0.add(name: "sym", type: UInt8(ascii: "2"))
        }))
        cases.append(("path deeper than the limit", .invalidLayer, archive {
            $0.addPAX([("path", Array((String(repeating: "a/", count: LayerUnpacker.maxPathDepth) + "f").utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("xattr value over 64 KiB", .invalidLayer, archive {
            $0.addPAX([("SCHILY.xattr.user.big", Array(repeating: 7, count: TarLimits.maxXattrValueSize + 1))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("xattr name over 255 bytes", .invalidLayer, archive {
            $0.addPAX([("SCHILY.xattr.user." + String(repeating: "n", count: 251), Array("v".utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("empty xattr name", .invalidLayer, archive {
            $0.addPAX([("SCHILY.xattr.", Array("v".utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("too many PAX records", .invalidLayer, archive {
            $0.addPAX((0...TarLimits.maxPAXRecords).map { ("comment.\($0)", Array("c".utf8)) })
            $0.add(name: "f", content: [1])
        }))
        cases.append(("too many PAX records over several headers", .invalidLayer, archive {
            for i in 0..<4 { $0.addPAX((0..<300).map { ("k\(i).\($0)", Array("c".utf8)) }) }
            $0.add(name: "f", content: [1])
        }))
        cases.append(("PAX extension over 1 MiB", .invalidLayer, archive {
            $0.addPAX([("comment", Array(repeating: UInt8(ascii: "c"), count: 1 << 20))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("PAX extensions over 1 MiB in several headers", .invalidLayer, archive {
            for _ in 0..<3 { $0.addPAX([("comment", Array(repeating: UInt8(ascii: "c"), count: 400 << 10))]) }
            $0.add(name: "f", content: [1])
        }))
        cases.append(("global PAX headers over 1 MiB in all", .invalidLayer, archive {
            for _ in 0..<3 {
                $0.add(name: "pax_global_header", type: UInt8(ascii: "g"),
                       content: paxData([("comment", Array(repeating: UInt8(ascii: "c"), count: 400 << 10))]))
            }
            $0.add(name: "f", content: [1])
        }))
        cases.append(("too many global PAX keywords", .invalidLayer, archive {
            for i in 0..<2 {
                $0.add(name: "pax_global_header", type: UInt8(ascii: "g"),
                       content: paxData((0..<(TarLimits.maxGlobalPAXRecords / 2 + 1)).map { ("k\(i).\($0)", Array("c".utf8)) }))
            }
            $0.add(name: "f", content: [1])
        }))
        cases.append(("PAX uid beyond uid_t", .invalidLayer, archive {
            $0.addPAX([("uid", Array("4294967296".utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("negative PAX gid", .invalidLayer, archive {
            $0.addPAX([("gid", Array("-1".utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("PAX size beyond Int64", .invalidLayer, archive {
            $0.addPAX([("size", Array("99999999999999999999".utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("PAX mtime at Int64.min with a fraction", .invalidLayer, archive {
            $0.addPAX([("mtime", Array("-9223372036854775808.5".utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("PAX mtime beyond Int64", .invalidLayer, archive {
            $0.addPAX([("mtime", Array("92233720368547758070".utf8))])
            $0.add(name: "f", content: [1])
        }))
        cases.append(("PAX mtime with a signed fraction", .invalidLayer, archive {
            $0.addPAX([("mtime", Array("1.-5".utf8))])
            $0.add(name: "f", content: [1])
        }))
        var negative = TarBuilder.header(name: "f", type: UInt8(ascii: "0"), size: 0)
        negative.replaceSubrange(124..<136, with: [0xff] + [UInt8](repeating: 0xff, count: 11))
        cases.append(("negative base-256 size", .invalidLayer, withChecksum(negative) + [UInt8](repeating: 0, count: 1024)))
        var huge = TarBuilder.header(name: "f", type: UInt8(ascii: "0"), size: 0)
        huge.replaceSubrange(136..<148, with: [0xc0] + [UInt8](repeating: 0, count: 11))   // mtime -2^93
        cases.append(("base-256 mtime beyond Int64", .invalidLayer, withChecksum(huge) + [UInt8](repeating: 0, count: 1024)))
        return cases.map { HostileCase(what: $0.0, code: $0.1, tar: $0.2) }
    }()

    /// `header` with its checksum field recomputed.
    static func withChecksum(_ header: [UInt8]) -> [UInt8] {
        var h = header
        for i in 148..<156 { h[i] = 0x20 }
        let sum = h.reduce(0) { $0 + Int($1) }
        h.replaceSubrange(148..<156, with: Array((String(sum, radix: 8).leftPadded(to: 6) + "\0 ").utf8))
        return h
    }

    @Test(arguments: hostile)
    func refusedWithoutTouchingTheHost(_ c: HostileCase) throws {
        let dir = try CanaryDirectory()
        let before = try dir.snapshot()
        #expect(performing: { try dir.unpack(c.tar) }, throws: { isRefusal($0, [c.code]) })
        #expect(try dir.snapshot() == before, "\(c.what) changed something outside the layer")
    }

    /// Cases only the unpacker can refuse: they depend on what is on disk or on the type.
    static let unpackerOnly: Set<String> = ["empty symlink target", "hardlink to the layer root",
                                            "entry through a symlink to the outside"]

    @Test(arguments: hostile.filter { !unpackerOnly.contains($0.what) })
    func readerOrNameRulesRefuse(_ c: HostileCase) {
        // The same rules without the unpacker: the reader, then the name rules every
        // consumer (the eager unpacker, the lazy layer tree, the converter) applies.
        #expect(performing: {
            let reader = TarReader(BytesSource(c.tar, step: 512))
            while let entry = try reader.next() {
                _ = try LayerUnpacker.components(of: entry.name, entry: entry.name)
                if entry.type == .hardlink { _ = try LayerUnpacker.components(of: entry.linkName, entry: entry.name) }
            }
        }, throws: { isRefusal($0, [c.code]) })
    }

    /// Forty global headers of 16 MiB each: refused at the first header, before its data is read.
    @Test func hugeGlobalHeadersFailFast() {
        let data = paxData([("comment", Array(repeating: UInt8(ascii: "c"), count: 16 << 20))])
        let header = TarBuilder.header(name: "pax_global_header", type: UInt8(ascii: "g"), size: data.count)
        let padding = [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
        let source = GeneratedSource { i in
            guard i < 120 else { return nil }
            switch i % 3 { case 0: return header; case 1: return data; default: return padding }
        }
        #expect(performing: { _ = try readAll(TarReader(source)) }, throws: { isRefusal($0, [.invalidLayer], mentioning: "global PAX") })
        #expect(source.bytesRead <= 512)
    }

    /// Many small global headers cost at most their 1 MiB in all.
    @Test func manySmallGlobalHeadersAreBounded() {
        let data = paxData([("comment", Array(repeating: UInt8(ascii: "c"), count: 60_000))])
        let header = TarBuilder.header(name: "pax_global_header", type: UInt8(ascii: "g"), size: data.count)
        let padding = [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
        let source = GeneratedSource { i in
            guard i < 3 * 10_000 else { return nil }
            switch i % 3 { case 0: return header; case 1: return data; default: return padding }
        }
        #expect(performing: { _ = try readAll(TarReader(source)) }, throws: { isRefusal($0, [.invalidLayer], mentioning: "global PAX") })
        #expect(source.bytesRead < Int(TarLimits.maxGlobalExtensionSize) + 64 * 1024)
    }

    /// What is within the limits still unpacks: a 1024-deep path, xattrs at their size limits,
    /// a 4096-byte name, negative sub-second times, a global header, a deep directory replaced
    /// by a file (its removal is iterative).
    @Test func withinTheLimitsUnpacks() throws {
        let dir = try CanaryDirectory()
        let before = try dir.snapshot()
        var t = TarBuilder()
        let deep = String(repeating: "d/", count: LayerUnpacker.maxPathDepth - 1) + "f"
        t.add(name: "pax_global_header", type: UInt8(ascii: "g"), content: paxData([("comment", Array("git".utf8))]))
        t.addPAX([("path", Array(deep.utf8))])
        t.add(name: "deep", content: Array("bottom".utf8))
        let part = String(repeating: "n", count: 255)
        let long = part + "//" + Array(repeating: part, count: 15).joined(separator: "/")
        try #require(long.utf8.count == 4096)
        t.addPAX([("path", Array(long.utf8))])
        t.add(name: "long", content: [1])
        t.addPAX([("SCHILY.xattr.user." + String(repeating: "x", count: 250), Array(repeating: 9, count: 1000)),
                  ("mtime", Array("-1.25".utf8))])
        t.add(name: "x", content: [2])
        t.add(name: "d", content: Array("flat".utf8))   // replaces the whole deep tree
        t.end()
        try dir.unpack(t.bytes)
        #expect(try dir.snapshot() == before)
        #expect(try String(contentsOfFile: dir.layer + "/d", encoding: .utf8) == "flat")
        #expect(FileManager.default.fileExists(atPath: dir.layer + "/" + part + "/" + part))
        var st = stat()
        #expect(lstat(dir.layer + "/x", &st) == 0)
        #expect(st.st_mtim.tv_sec == -2 && st.st_mtim.tv_nsec == 750_000_000)
        var value = [UInt8](repeating: 0, count: 2000)
        let n = getxattr(dir.layer + "/x", "user." + String(repeating: "x", count: 250), &value, value.count)
        // Some filesystems (tmpfs without user xattrs) refuse user.*: the unpack then fails,
        // so reaching here means it was stored.
        #expect(n == 1000)
    }

    /// A directory tree deeper than any layer may make, removed by a whiteout-style
    /// replacement: no recursion, and no descriptor left open.
    @Test func removesDeepTreesIteratively() throws {
        let dir = try CanaryDirectory()
        let root = open(dir.layer, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        try #require(root >= 0)
        defer { close(root) }
        var fd = dup(root)
        for i in 0..<3000 {
            #expect(mkdirat(fd, "d", 0o755) == 0)
            if i % 7 == 0 { close(openat(fd, "file", O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)) }
            if i % 11 == 0 { symlinkat("../../..", fd, "up") }
            let next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            close(fd)
            fd = next
        }
        close(fd)
        try LayerUnpacker.removeContents(of: root)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.layer).isEmpty)
        #expect(try dir.snapshot().contains { $0.hasPrefix("/canary/file ") })
    }

    /// Negative PAX times normalise to a timespec (nanoseconds in 0 ..< 10^9); within range
    /// values read as before.
    @Test(arguments: [("1700000000.25", 1_700_000_000, 250_000_000), ("-1.25", -2, 750_000_000), ("-0.5", -1, 500_000_000),
                      ("-3", -3, 0), ("5.", 5, 0), ("7.1234567891", 7, 123_456_789)] as [(String, Int64, Int32)])
    func paxTimes(text: String, seconds: Int64, nanoseconds: Int32) throws {
        let t = try TarReader.paxTime(text, name: "f")
        #expect(t.0 == seconds && t.1 == nanoseconds)
    }
}
