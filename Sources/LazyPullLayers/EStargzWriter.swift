import CLazyPullShims
import CZlib
import Foundation
import LazyPullOCI

/// Writes a layer as eStargz (stargz-snapshotter docs/estargz.md): every file's content
/// starts a new gzip member (and so does each `chunkSize` piece of it), so a reader can fetch
/// and inflate one file alone; a TOC (`stargz.index.json`) in its own member lists every
/// entry with its offset and digests; a 51-byte footer points at the TOC. Files named in the
/// prefetch list come first, followed by `.prefetch.landmark`; without a list the layer
/// starts with `.no.prefetch.landmark`. The whole is still a valid gzip'd tar.
public struct EStargzWriter {
    public struct Output: Sendable {
        public var digest: Digest
        public var size: Int64
        public var diffID: Digest
        public var tocDigest: Digest
        public var uncompressedSize: Int64
    }

    public static let landmarkContents: [UInt8] = [0x0f]

    /// Reads the tar `source`, writes the eStargz blob to `fd`.
    public static func convert(_ source: ByteSource, prefetch: [String], chunkSize: Int64 = 4 << 20,
                               to fd: Int32) throws -> Output {
        // Read all entries: prefetched files move to the front.
        let tar = TarReader(source)
        var entries: [(TarEntry, [UInt8])] = []
        while let entry = try tar.next() {
            entries.append((entry, entry.type == .regular ? try tar.readRemainingContent() : []))
        }
        let wanted = Set(try prefetch.map { try LayerUnpacker.components(of: $0.hasPrefix("/") ? String($0.dropFirst()) : $0, entry: $0).joined(separator: "/") })
        var ordered: [(TarEntry, [UInt8])] = []
        var rest: [(TarEntry, [UInt8])] = []
        for item in entries {
            let name = try LayerUnpacker.components(of: item.0.name, entry: item.0.name).joined(separator: "/")
            if item.0.type == .regular && wanted.contains(name) { ordered.append(item) } else { rest.append(item) }
        }
        let landmark = TarEntry(name: ordered.isEmpty ? ".no.prefetch.landmark" : ".prefetch.landmark", type: .regular,
                                mode: 0o644, uid: 0, gid: 0, size: 1, mtime: (0, 0), linkName: "", deviceMajor: 0,
                                deviceMinor: 0, xattrs: [])
        if ordered.isEmpty { ordered = [(landmark, landmarkContents)] + rest } else { ordered += [(landmark, landmarkContents)] + rest }

        let out = try GzipMemberWriter(fd: fd)
        var toc: [TOCEntry] = []
        for (entry, content) in ordered {
            try out.write(TarWriter.header(for: entry))
            let name = try LayerUnpacker.components(of: entry.name, entry: entry.name).joined(separator: "/")
            var t = TOCEntry(name: name, type: tocType(entry.type))
            t.mode = Int64(entry.mode)
            t.uid = entry.uid == 0 ? nil : Int(entry.uid)
            t.gid = entry.gid == 0 ? nil : Int(entry.gid)
            t.modtime = entry.mtime.seconds == 0 ? nil : rfc3339(entry.mtime.seconds)
            if !entry.xattrs.isEmpty {
                t.xattrs = Dictionary(entry.xattrs.map { ($0.name, Data($0.value).base64EncodedString()) }, uniquingKeysWith: { $1 })
            }
            switch entry.type {
            case .symlink: t.linkName = entry.linkName
            case .hardlink: t.linkName = try LayerUnpacker.components(of: entry.linkName, entry: entry.name).joined(separator: "/")
            case .characterDevice, .blockDevice:
                t.devMajor = Int(entry.deviceMajor)
                t.devMinor = Int(entry.deviceMinor)
            default: break
            }
            guard entry.type == .regular else { toc.append(t); continue }
            t.size = entry.size
            guard !content.isEmpty else { toc.append(t); continue }
            t.digest = Digest.sha256(of: content).description
            var offset = 0
            while offset < content.count {
                let piece = content[offset..<min(content.count, offset + Int(chunkSize))]
                try out.beginMember()
                var c = offset == 0 ? t : TOCEntry(name: name, type: "chunk")
                c.offset = out.compressedOffset
                c.chunkOffset = offset == 0 ? nil : Int64(offset)
                c.chunkSize = content.count > Int(chunkSize) ? Int64(piece.count) : nil
                c.chunkDigest = Digest.sha256(of: piece).description
                try out.write(Array(piece))
                toc.append(c)
                offset += piece.count
            }
            try out.write(TarWriter.padding(for: entry.size))
        }

        // The TOC in a member of its own, as the last entry of the tar.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = Array(try encoder.encode(LayerTOC(version: 1, entries: toc)))
        try out.beginMember()
        let tocOffset = out.compressedOffset
        let tocEntry = TarEntry(name: LayerTOCReader.tocTarName, type: .regular, mode: 0o444, uid: 0, gid: 0,
                                size: Int64(json.count), mtime: (0, 0), linkName: "", deviceMajor: 0, deviceMinor: 0, xattrs: [])
        try out.write(TarWriter.header(for: tocEntry) + json + TarWriter.padding(for: Int64(json.count)) + TarWriter.end)
        try out.finishMember()
        try out.writeRaw(footer(tocOffset: tocOffset))
        return Output(digest: out.compressedDigest(), size: out.compressedOffset, diffID: out.uncompressedDigest(),
                      tocDigest: Digest.sha256(of: json), uncompressedSize: out.uncompressedCount)
    }

    static func tocType(_ type: TarEntryType) -> String {
        switch type {
        case .regular: "reg"
        case .directory: "dir"
        case .symlink: "symlink"
        case .hardlink: "hardlink"
        case .characterDevice: "char"
        case .blockDevice: "block"
        case .fifo: "fifo"
        }
    }

    static func rfc3339(_ seconds: Int64) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    /// An empty gzip member whose FEXTRA field ("SG", 22 bytes) holds `%016x` of the TOC
    /// offset and `STARGZ`: 51 bytes, so a reader finds it at a fixed distance from the end.
    static func footer(tocOffset: Int64) -> [UInt8] {
        var f: [UInt8] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, UInt8(ascii: "S"), UInt8(ascii: "G"), 22, 0]
        f += Array(String(tocOffset, radix: 16).leftPad(16).utf8) + Array("STARGZ".utf8)
        f += [0x01, 0x00, 0x00, 0xff, 0xff]           // a final, empty stored block
        f += [0, 0, 0, 0, 0, 0, 0, 0]                 // CRC-32 and size of nothing
        return f
    }
}

/// Writes gzip members one after another to a file descriptor, hashing the compressed and
/// the uncompressed bytes.
final class GzipMemberWriter {
    private let fd: Int32
    private var stream = z_stream()
    private var open = false
    private(set) var compressedOffset: Int64 = 0
    private(set) var uncompressedCount: Int64 = 0
    private let compressedHasher = SHA256Hasher()
    private let uncompressedHasher = SHA256Hasher()
    private var buffer = [UInt8](repeating: 0, count: 256 * 1024)

    init(fd: Int32) throws { self.fd = fd }

    deinit { if open { deflateEnd(&stream) } }

    func beginMember() throws {
        if open { try finishMember() }
        stream = z_stream()
        guard lp_deflate_init_gzip(&stream, Z_DEFAULT_COMPRESSION) == Z_OK else {
            throw LazyPullError(.io, "cannot initialise gzip compressor")
        }
        open = true
    }

    func write(_ bytes: [UInt8]) throws {
        if !open { try beginMember() }
        uncompressedHasher.update(bytes)
        uncompressedCount += Int64(bytes.count)
        var input = bytes
        try input.withUnsafeMutableBufferPointer { inBuf in
            stream.next_in = inBuf.baseAddress
            stream.avail_in = UInt32(inBuf.count)
            while stream.avail_in > 0 { try pump(Z_NO_FLUSH) }
        }
    }

    func finishMember() throws {
        guard open else { return }
        stream.next_in = nil
        stream.avail_in = 0
        var rc = Z_OK
        while rc != Z_STREAM_END { rc = try pump(Z_FINISH) }
        deflateEnd(&stream)
        open = false
    }

    @discardableResult
    private func pump(_ flush: Int32) throws -> Int32 {
        try buffer.withUnsafeMutableBufferPointer { outBuf -> Int32 in
            stream.next_out = outBuf.baseAddress
            stream.avail_out = UInt32(outBuf.count)
            let rc = deflate(&stream, flush)
            guard rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR else {
                throw LazyPullError(.io, "gzip compression failed (\(rc))")
            }
            let produced = outBuf.count - Int(stream.avail_out)
            try writeRaw(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(outBuf)[..<produced]))
            return rc
        }
    }

    func writeRaw(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try writeRaw($0) }
    }

    private func writeRaw(_ bytes: UnsafeRawBufferPointer) throws {
        compressedHasher.update(bytes)
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw LazyPullError(.io, "cannot write converted layer: \(String(cString: strerror(errno)))") }
            done += n
        }
        compressedOffset += Int64(bytes.count)
    }

    func compressedDigest() -> Digest { compressedHasher.finalize() }
    func uncompressedDigest() -> Digest { uncompressedHasher.finalize() }
}
