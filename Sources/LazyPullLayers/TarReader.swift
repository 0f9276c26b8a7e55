import LazyPullOCI

/// The kind of a tar entry (POSIX.1-2001 ustar typeflag).
public enum TarEntryType: Sendable, Equatable {
    case regular, hardlink, symlink, characterDevice, blockDevice, directory, fifo
}

/// One tar entry with every extension applied: PAX records (long names, xattrs as
/// `SCHILY.xattr.*`, sub-second times, large ids and sizes), GNU long names and links.
public struct TarEntry: Sendable, Equatable {
    /// Name as stored (after PAX/GNU overrides), not yet cleaned or checked.
    public var name: String
    public var type: TarEntryType
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: Int64
    /// Modification time: seconds and nanoseconds since the epoch.
    public var mtime: (seconds: Int64, nanoseconds: Int32)
    public var linkName: String
    public var deviceMajor: UInt32
    public var deviceMinor: UInt32
    /// Extended attributes in the order they appeared.
    public var xattrs: [(name: String, value: [UInt8])]

    public static func == (a: TarEntry, b: TarEntry) -> Bool {
        a.name == b.name && a.type == b.type && a.mode == b.mode && a.uid == b.uid && a.gid == b.gid
            && a.size == b.size && a.mtime == b.mtime && a.linkName == b.linkName
            && a.deviceMajor == b.deviceMajor && a.deviceMinor == b.deviceMinor
            && a.xattrs.map(\.name) == b.xattrs.map(\.name) && a.xattrs.map(\.value) == b.xattrs.map(\.value)
    }
}

/// Reads a tar stream entry by entry (POSIX.1-2001 pax and ustar, GNU extensions).
/// After ``next()`` returns an entry, its content can be read with ``readContent(into:)``;
/// the next call to ``next()`` skips whatever was not read.
public final class TarReader {
    private let source: ByteSource
    private var remaining: Int64 = 0
    private var padding: Int64 = 0
    private var globalPAX: [String: [UInt8]] = [:]
    private var block = [UInt8](repeating: 0, count: 512)
    private var skipBuffer = [UInt8](repeating: 0, count: 64 * 1024)
    private var entryCount = 0

    public init(_ source: ByteSource) { self.source = source }

    /// The next entry, or nil at the end of the archive.
    public func next() throws -> TarEntry? {
        try skip(remaining)
        remaining = 0
        if padding > 0 {
            // A stream may end right after the last file's content, without padding or the
            // end-of-archive blocks (umoci writes such layers; Go's archive/tar accepts them).
            let skipped = try skip(padding, allowEndAtStart: true)
            padding = 0
            if !skipped { return nil }
        }
        var pax: [String: [UInt8]] = [:]
        var gnuLongName: String?
        var gnuLongLink: String?
        while true {
            guard try readBlock() else {
                // A stream that ends without the two zero blocks: accept only between entries.
                if pax.isEmpty && gnuLongName == nil && gnuLongLink == nil { return nil }
                throw LazyPullError(.invalidLayer, "tar stream ends inside an entry header")
            }
            if block.allSatisfy({ $0 == 0 }) { return nil }
            try verifyChecksum()
            let typeflag = block[156]
            let size = try numeric(124, 12, field: "size")
            guard size >= 0 else { throw LazyPullError(.invalidLayer, "tar entry with negative size") }
            switch typeflag {
            case UInt8(ascii: "x"):
                pax.merge(try parsePAX(try readWhole(size)), uniquingKeysWith: { $1 })
                continue
            case UInt8(ascii: "g"):
                globalPAX.merge(try parsePAX(try readWhole(size)), uniquingKeysWith: { $1 })
                continue
            case UInt8(ascii: "L"):
                gnuLongName = Self.cString(try readWhole(size)[...])
                continue
            case UInt8(ascii: "K"):
                gnuLongLink = Self.cString(try readWhole(size)[...])
                continue
            default:
                break
            }
            entryCount += 1
            return try makeEntry(typeflag: typeflag, size: size, pax: globalPAX.merging(pax, uniquingKeysWith: { $1 }),
                                 longName: gnuLongName, longLink: gnuLongLink)
        }
    }

    /// Reads content of the current entry; 0 at its end.
    public func readContent(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard remaining > 0 else { return 0 }
        let want = Int(min(Int64(buffer.count), remaining))
        let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<want]))
        guard n > 0 else { throw LazyPullError(.invalidLayer, "tar stream ends inside file content") }
        remaining -= Int64(n)
        return n
    }

    private func makeEntry(typeflag: UInt8, size: Int64, pax: [String: [UInt8]],
                           longName: String?, longLink: String?) throws -> TarEntry {
        let type: TarEntryType
        switch typeflag {
        case UInt8(ascii: "0"), 0, UInt8(ascii: "7"): type = .regular
        case UInt8(ascii: "1"): type = .hardlink
        case UInt8(ascii: "2"): type = .symlink
        case UInt8(ascii: "3"): type = .characterDevice
        case UInt8(ascii: "4"): type = .blockDevice
        case UInt8(ascii: "5"): type = .directory
        case UInt8(ascii: "6"): type = .fifo
        case UInt8(ascii: "S"):
            throw LazyPullError(.invalidLayer, "GNU sparse tar entries are not supported")
        default:
            throw LazyPullError(.invalidLayer, "unsupported tar entry type '\(Character(Unicode.Scalar(typeflag)))'")
        }
        var name = Self.cString(block[0..<100])
        let magic = Array(block[257..<263])
        if magic == Array("ustar\0".utf8) {
            let prefix = Self.cString(block[345..<500])
            if !prefix.isEmpty { name = prefix + "/" + name }
        }
        if let longName { name = longName }
        if let p = pax["path"] { name = String(decoding: p, as: UTF8.self) }
        var linkName = Self.cString(block[157..<257])
        if let longLink { linkName = longLink }
        if let p = pax["linkpath"] { linkName = String(decoding: p, as: UTF8.self) }

        var entry = TarEntry(
            name: name, type: type,
            mode: UInt32(truncatingIfNeeded: try numeric(100, 8, field: "mode")) & 0o7777,
            uid: UInt32(truncatingIfNeeded: try numeric(108, 8, field: "uid")),
            gid: UInt32(truncatingIfNeeded: try numeric(116, 8, field: "gid")),
            size: size,
            mtime: (try numeric(136, 12, field: "mtime"), 0),
            linkName: linkName,
            deviceMajor: UInt32(truncatingIfNeeded: try numeric(329, 8, field: "devmajor")),
            deviceMinor: UInt32(truncatingIfNeeded: try numeric(337, 8, field: "devminor")),
            xattrs: [])
        if let v = pax["uid"].flatMap({ UInt32(String(decoding: $0, as: UTF8.self)) }) { entry.uid = v }
        if let v = pax["gid"].flatMap({ UInt32(String(decoding: $0, as: UTF8.self)) }) { entry.gid = v }
        if let v = pax["size"] {
            guard let s = Int64(String(decoding: v, as: UTF8.self)), s >= 0 else {
                throw LazyPullError(.invalidLayer, "invalid PAX size for \(name)")
            }
            entry.size = s
        }
        if let v = pax["mtime"] { entry.mtime = try Self.paxTime(String(decoding: v, as: UTF8.self), name: name) }
        for key in pax.keys.sorted() where key.hasPrefix("SCHILY.xattr.") {
            entry.xattrs.append((String(key.dropFirst("SCHILY.xattr.".count)), pax[key]!))
        }
        // Only regular files carry data blocks; the size field of links, directories,
        // devices and fifos is not content (as GNU tar and Go's archive/tar read it).
        remaining = type == .regular ? entry.size : 0
        padding = (512 - remaining % 512) % 512
        return entry
    }

    /// `seconds[.fraction]` as in PAX `mtime` records.
    static func paxTime(_ text: String, name: String) throws -> (Int64, Int32) {
        let parts = text.split(separator: ".", maxSplits: 1)
        guard let first = parts.first, let seconds = Int64(first) else {
            throw LazyPullError(.invalidLayer, "invalid PAX mtime \"\(text)\" for \(name)")
        }
        var nanos: Int32 = 0
        if parts.count == 2 {
            let digits = String(parts[1].prefix(9)).padding(toLength: 9, withPad: "0", startingAt: 0)
            guard let n = Int32(digits) else { throw LazyPullError(.invalidLayer, "invalid PAX mtime \"\(text)\" for \(name)") }
            nanos = seconds < 0 && n > 0 ? -n : n
        }
        return (seconds, nanos)
    }

    /// Parses PAX extended header records: `"%d %s=%s\n"` where the length counts the whole record.
    func parsePAX(_ data: [UInt8]) throws -> [String: [UInt8]] {
        var records: [String: [UInt8]] = [:]
        var i = 0
        while i < data.count {
            if data[i] == 0 { break }
            guard let space = data[i...].firstIndex(of: UInt8(ascii: " ")),
                  let length = Int(String(decoding: data[i..<space], as: UTF8.self)), length > 0,
                  i + length <= data.count, data[i + length - 1] == UInt8(ascii: "\n"),
                  let equals = data[(space + 1)..<(i + length)].firstIndex(of: UInt8(ascii: "=")) else {
                throw LazyPullError(.invalidLayer, "malformed PAX extended header")
            }
            let key = String(decoding: data[(space + 1)..<equals], as: UTF8.self)
            records[key] = Array(data[(equals + 1)..<(i + length - 1)])
            i += length
        }
        return records
    }

    private func readBlock() throws -> Bool {
        let n = try block.withUnsafeMutableBytes { try source.readFully(into: $0) }
        if n == 0 { return false }
        guard n == 512 else { throw LazyPullError(.invalidLayer, "tar stream ends inside a header block") }
        return true
    }

    private func readWhole(_ size: Int64) throws -> [UInt8] {
        guard size <= 16 << 20 else { throw LazyPullError(.invalidLayer, "tar extension header of \(size) bytes is too large") }
        var data = [UInt8](repeating: 0, count: Int(size))
        let n = try data.withUnsafeMutableBytes { try source.readFully(into: $0) }
        guard n == data.count else { throw LazyPullError(.invalidLayer, "tar stream ends inside an extension header") }
        try skip((512 - size % 512) % 512)
        return data
    }

    /// Skips `count` bytes. Returns false when the stream ended before the first of them
    /// and `allowEndAtStart` is set.
    @discardableResult
    private func skip(_ count: Int64, allowEndAtStart: Bool = false) throws -> Bool {
        var left = count
        while left > 0 {
            let n = try skipBuffer.withUnsafeMutableBytes {
                try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<Int(min(Int64($0.count), left))]))
            }
            if n == 0 && allowEndAtStart && left == count { return false }
            guard n > 0 else { throw LazyPullError(.invalidLayer, "tar stream ends inside file content") }
            left -= Int64(n)
        }
        return true
    }

    private func verifyChecksum() throws {
        var unsigned = 0
        var signed = 0
        for (i, b) in block.enumerated() {
            let v = (148..<156).contains(i) ? 0x20 : b
            unsigned += Int(v)
            signed += Int(Int8(bitPattern: v))
        }
        let stored = try numeric(148, 8, field: "checksum")
        guard stored == unsigned || stored == signed else {
            throw LazyPullError(.invalidLayer, "tar header checksum mismatch after \(entryCount) entries (not a tar stream, or corrupt)")
        }
    }

    /// A numeric header field: octal text, or GNU base-256 when the high bit is set.
    private func numeric(_ offset: Int, _ length: Int, field: String) throws -> Int64 {
        let bytes = block[offset..<(offset + length)]
        if let first = bytes.first, first & 0x80 != 0 {
            var value: Int64 = Int64(first & 0x7f)
            if first & 0x40 != 0 { value -= 0x80 }
            for b in bytes.dropFirst() {
                guard value < Int64.max >> 8 else { throw LazyPullError(.invalidLayer, "tar \(field) field overflows") }
                value = value << 8 | Int64(b)
            }
            return value
        }
        var value: Int64 = 0
        var seenDigit = false
        for b in bytes {
            if b == 0 || (b == 0x20 && seenDigit) { break }
            if b == 0x20 { continue }
            guard b >= 0x30 && b <= 0x37 else { throw LazyPullError(.invalidLayer, "invalid tar \(field) field") }
            guard value < Int64.max >> 3 else { throw LazyPullError(.invalidLayer, "tar \(field) field overflows") }
            value = value << 3 | Int64(b - 0x30)
            seenDigit = true
        }
        return value
    }

    static func cString(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}
