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

/// Bounds on what one tar stream may make the reader hold or pass on. Tar headers are
/// untrusted (DESIGN.md §9): each limit is far above what real layers use and keeps a
/// hostile stream from costing more than a few MiB of memory.
public enum TarLimits {
    /// The extension data (PAX `x` records, GNU `L` long name and `K` long link) that may
    /// precede one entry, in bytes: 1 MiB. A real entry needs its path and link (each at most
    /// ``LayerUnpacker/maxNameLength``) and a few xattrs (each at most
    /// ``maxXattrValueSize``); Go's archive/tar reads no more than 1 MiB per PAX header either.
    public static let maxExtensionSize: Int64 = 1 << 20
    /// Global PAX (`g`) data over a whole archive, in bytes: 1 MiB. Writers emit one small
    /// global header (`git archive`: a `comment`); forty of 16 MiB must not cost 700 MiB.
    public static let maxGlobalExtensionSize: Int64 = 1 << 20
    /// PAX records in the extension headers of one entry: 1024 (an entry has a handful plus
    /// one per xattr).
    public static let maxPAXRecords = 1024
    /// Distinct PAX keywords in all global headers of an archive together: 64. Writers put
    /// one or two there (`git archive`: `comment`); each applies to every later entry, so
    /// the bound also keeps the per-entry cost of applying them small.
    public static let maxGlobalPAXRecords = 64
    /// An extended attribute's name, in bytes: 255 (Linux `XATTR_NAME_MAX`).
    public static let maxXattrNameLength = 255
    /// An extended attribute's value, in bytes: 64 KiB (Linux `XATTR_SIZE_MAX`).
    public static let maxXattrValueSize = 65536
}

/// Reads a tar stream entry by entry (POSIX.1-2001 pax and ustar, GNU extensions).
/// After ``next()`` returns an entry, its content can be read with ``readContent(into:)``;
/// the next call to ``next()`` skips whatever was not read.
///
/// The stream is untrusted. Names are byte strings: a NUL inside a PAX `path`/`linkpath`,
/// a GNU long name or link, or a PAX keyword (which names xattrs) is refused as
/// ``LazyPullError/Code/hostileLayer`` (C calls would see a different, shorter name), as Go's
/// archive/tar refuses it. Fixed ustar fields end at their first NUL, as the format says.
/// Sizes are bounded by ``TarLimits``; every number is range-checked before use.
public final class TarReader {
    private let source: ByteSource
    private var remaining: Int64 = 0
    private var padding: Int64 = 0
    private var globalPAX: [String: [UInt8]] = [:]
    /// Bytes of global PAX data read so far (bounded by ``TarLimits/maxGlobalExtensionSize``).
    private var globalPAXBytes: Int64 = 0
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
        var extensionBytes: Int64 = 0
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
            case UInt8(ascii: "x"), UInt8(ascii: "L"), UInt8(ascii: "K"):
                // size ≤ maxExtensionSize - extensionBytes: both sides are non-negative.
                guard size <= TarLimits.maxExtensionSize - extensionBytes else {
                    throw LazyPullError(.invalidLayer, "tar extension headers of more than \(TarLimits.maxExtensionSize) bytes "
                                        + "before entry \(entryCount + 1)")
                }
                extensionBytes += size
                let data = try readWhole(size)
                switch typeflag {
                case UInt8(ascii: "x"):
                    let records = try parsePAX(data, limit: TarLimits.maxPAXRecords - pax.count, global: false)
                    pax.merge(records, uniquingKeysWith: { $1 })
                case UInt8(ascii: "L"): gnuLongName = try Self.gnuLongString(data, what: "long name")
                default: gnuLongLink = try Self.gnuLongString(data, what: "long link name")
                }
                continue
            case UInt8(ascii: "g"):
                guard size <= TarLimits.maxGlobalExtensionSize - globalPAXBytes else {
                    throw LazyPullError(.invalidLayer, "tar global PAX headers of more than "
                                        + "\(TarLimits.maxGlobalExtensionSize) bytes in all")
                }
                globalPAXBytes += size
                let records = try parsePAX(try readWhole(size), limit: TarLimits.maxPAXRecords, global: true)
                globalPAX.merge(records, uniquingKeysWith: { $1 })
                guard globalPAX.count <= TarLimits.maxGlobalPAXRecords else {
                    throw LazyPullError(.invalidLayer, "tar global PAX headers with more than \(TarLimits.maxGlobalPAXRecords) keywords")
                }
                continue
            default:
                break
            }
            entryCount += 1
            return try makeEntry(typeflag: typeflag, size: size,
                                 pax: globalPAX.isEmpty ? pax : globalPAX.merging(pax, uniquingKeysWith: { $1 }),
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

    /// The rest of the current entry's content, in memory. Memory grows with the bytes that
    /// arrive (at most ``contentPiece`` at a time), never with the size a hostile header claims;
    /// a stream that ends early is the error of ``readContent(into:)``.
    public func readRemainingContent() throws -> [UInt8] {
        var content: [UInt8] = []
        while remaining > 0 {
            let start = content.count
            content.append(contentsOf: repeatElement(0, count: Int(min(remaining, Self.contentPiece))))
            let n = try content.withUnsafeMutableBytes { try readContent(into: UnsafeMutableRawBufferPointer(rebasing: $0[start...])) }
            content.removeLast(content.count - start - n)
        }
        return content
    }

    /// Bytes ``readRemainingContent()`` adds to its buffer at a time.
    static let contentPiece: Int64 = 1 << 20

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
        if let p = pax["path"] { name = try Self.paxName(p, key: "path", entry: name) }
        var linkName = Self.cString(block[157..<257])
        if let longLink { linkName = longLink }
        if let p = pax["linkpath"] { linkName = try Self.paxName(p, key: "linkpath", entry: name) }
        guard name.utf8.count <= LayerUnpacker.maxNameLength, linkName.utf8.count <= LayerUnpacker.maxNameLength else {
            throw LazyPullError(.invalidLayer, "tar entry \(Self.quoted(name)) has a name or link target longer than "
                                + "\(LayerUnpacker.maxNameLength) bytes")
        }

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
        if let v = pax["uid"] { entry.uid = try Self.paxID(v, key: "uid", entry: name) }
        if let v = pax["gid"] { entry.gid = try Self.paxID(v, key: "gid", entry: name) }
        if let v = pax["size"] {
            guard let s = Self.decimal(v) else {
                throw LazyPullError(.invalidLayer, "invalid PAX size for \(Self.quoted(name))")
            }
            entry.size = s
        }
        if let v = pax["mtime"] { entry.mtime = try Self.paxTime(String(decoding: v, as: UTF8.self), name: name) }
        for key in pax.keys.sorted() where key.hasPrefix("SCHILY.xattr.") {
            let xattr = String(key.dropFirst("SCHILY.xattr.".count))
            let value = pax[key] ?? []
            // NUL in keywords was refused when the records were parsed.
            guard !xattr.isEmpty, xattr.utf8.count <= TarLimits.maxXattrNameLength else {
                throw LazyPullError(.invalidLayer, "tar entry \(Self.quoted(name)) has an xattr name that is empty or longer than "
                                    + "\(TarLimits.maxXattrNameLength) bytes")
            }
            guard value.count <= TarLimits.maxXattrValueSize else {
                throw LazyPullError(.invalidLayer, "tar entry \(Self.quoted(name)) has a value of xattr \(Self.quoted(xattr)) longer than "
                                    + "\(TarLimits.maxXattrValueSize) bytes")
            }
            entry.xattrs.append((xattr, value))
        }
        // Only regular files carry data blocks; the size field of links, directories,
        // devices and fifos is not content (as GNU tar and Go's archive/tar read it).
        remaining = type == .regular ? entry.size : 0
        padding = (512 - remaining % 512) % 512
        return entry
    }

    /// A PAX `path` or `linkpath` value: UTF-8 (POSIX.1-2001 pax "path"), no NUL byte.
    static func paxName(_ value: [UInt8], key: String, entry: String) throws -> String {
        let text = String(decoding: value, as: UTF8.self)
        guard !value.contains(0) else {
            throw LazyPullError(.hostileLayer, "tar entry \(quoted(entry)) has a NUL byte in its PAX \(key) \(quoted(text))")
        }
        return text
    }

    /// A GNU `L`/`K` record: a name ended by a NUL (GNU tar writes exactly one). Bytes after
    /// the first NUL must be NUL too: C calls would see only what precedes it.
    static func gnuLongString(_ data: [UInt8], what: String) throws -> String {
        let end = data.firstIndex(of: 0) ?? data.endIndex
        let text = String(decoding: data[..<end], as: UTF8.self)
        guard data[end...].allSatisfy({ $0 == 0 }) else {
            throw LazyPullError(.hostileLayer, "tar GNU \(what) \(quoted(String(decoding: data, as: UTF8.self))) has a NUL byte inside")
        }
        return text
    }

    /// A PAX `uid`/`gid`: decimal, within `uid_t`.
    static func paxID(_ value: [UInt8], key: String, entry: String) throws -> UInt32 {
        guard let v = decimal(value), let id = UInt32(exactly: v) else {
            throw LazyPullError(.invalidLayer, "invalid PAX \(key) \(quoted(String(decoding: value, as: UTF8.self))) for \(quoted(entry))")
        }
        return id
    }

    /// Non-negative decimal ASCII digits (at most 18, so it fits Int64), or nil.
    static func decimal<C: Collection>(_ digits: C) -> Int64? where C.Element == UInt8 {
        guard !digits.isEmpty, digits.count <= 18 else { return nil }
        var value: Int64 = 0
        for d in digits {
            guard d >= 0x30 && d <= 0x39 else { return nil }
            value = value * 10 + Int64(d - 0x30)
        }
        return value
    }

    /// `seconds[.fraction]` as in PAX `mtime` records; a negative time is normalised so that
    /// the nanoseconds are in `0 ..< 10^9` (as `timespec` wants).
    static func paxTime(_ text: String, name: String) throws -> (Int64, Int32) {
        let invalid = LazyPullError(.invalidLayer, "invalid PAX mtime \(quoted(text)) for \(quoted(name))")
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = parts.first, let seconds = Int64(first) else { throw invalid }
        var nanos: Int32 = 0
        if parts.count == 2 {
            // Digits only (maybe none, as Go's archive/tar accepts); beyond nanoseconds cut off.
            guard parts[1].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { throw invalid }
            let digits = String(parts[1].prefix(9)).padding(toLength: 9, withPad: "0", startingAt: 0)
            guard let n = Int32(digits) else { throw invalid }
            nanos = n
        }
        if first.hasPrefix("-") && nanos > 0 {
            let (whole, overflow) = seconds.subtractingReportingOverflow(1)
            guard !overflow else { throw invalid }
            return (whole, 1_000_000_000 - nanos)
        }
        return (seconds, nanos)
    }

    /// Parses PAX extended header records: `"%d %s=%s\n"` where the length counts the whole
    /// record (POSIX.1-2001 pax "extended header"). At most `limit` records; no keyword may
    /// hold a NUL byte (an xattr's name is part of its keyword).
    func parsePAX(_ data: [UInt8], limit: Int, global: Bool) throws -> [String: [UInt8]] {
        let kind = global ? "global PAX header" : "PAX extended header"
        let malformed = LazyPullError(.invalidLayer, "malformed \(kind) before entry \(entryCount + 1)")
        var records: [String: [UInt8]] = [:]
        var count = 0
        var i = 0
        while i < data.count {
            if data[i] == 0 { break }
            // The length: decimal digits, then one space; at most 7 digits (the header is ≤ 1 MiB).
            guard let space = data[i..<min(data.count, i + 8)].firstIndex(of: UInt8(ascii: " ")),
                  let length = Self.decimal(data[i..<space]).flatMap({ Int(exactly: $0) }),
                  length > space - i + 1, length <= data.count - i else {
                throw malformed
            }
            let end = i + length   // ≤ data.count, checked above
            guard data[end - 1] == UInt8(ascii: "\n"),
                  let equals = data[(space + 1)..<(end - 1)].firstIndex(of: UInt8(ascii: "=")) else {
                throw malformed
            }
            count += 1
            guard count <= limit else {
                throw LazyPullError(.invalidLayer, "\(kind) with more than \(TarLimits.maxPAXRecords) records before entry \(entryCount + 1)")
            }
            let keyBytes = data[(space + 1)..<equals]
            let key = String(decoding: keyBytes, as: UTF8.self)
            guard !keyBytes.contains(0) else {
                throw LazyPullError(.hostileLayer, "\(kind) before entry \(entryCount + 1) has a NUL byte in keyword \(Self.quoted(key))")
            }
            records[key] = Array(data[(equals + 1)..<(end - 1)])
            i = end
        }
        return records
    }

    /// `text` quoted for a one-line message: control characters (NUL, newlines) escaped, at
    /// most 200 characters.
    static func quoted(_ text: String) -> String {
        let shown = text.count > 200 ? String(text.prefix(200)) + "…" : text
        return String(reflecting: shown)
    }

    private func readBlock() throws -> Bool {
        let n = try block.withUnsafeMutableBytes { try source.readFully(into: $0) }
        if n == 0 { return false }
        guard n == 512 else { throw LazyPullError(.invalidLayer, "tar stream ends inside a header block") }
        return true
    }

    private func readWhole(_ size: Int64) throws -> [UInt8] {
        // Callers bound the size by TarLimits; this keeps the allocation bounded regardless.
        guard size >= 0, size <= max(TarLimits.maxExtensionSize, TarLimits.maxGlobalExtensionSize) else {
            throw LazyPullError(.invalidLayer, "tar extension header of \(size) bytes is too large")
        }
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

    /// A numeric header field: octal text, or GNU base-256 (two's complement, big endian)
    /// when the high bit is set. Values beyond Int64 are refused.
    private func numeric(_ offset: Int, _ length: Int, field: String) throws -> Int64 {
        let bytes = block[offset..<(offset + length)]
        if let first = bytes.first, first & 0x80 != 0 {
            var value: Int64 = Int64(first & 0x7f)
            if first & 0x40 != 0 { value -= 0x80 }
            for b in bytes.dropFirst() {
                // Both bounds keep `value << 8` exact (the shift itself never traps).
                guard value <= Int64.max >> 8, value >= Int64.min >> 8 else { throw LazyPullError(.invalidLayer, "tar \(field) field overflows") }
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
            guard value <= Int64.max >> 3 else { throw LazyPullError(.invalidLayer, "tar \(field) field overflows") }
            value = value << 3 | Int64(b - 0x30)
            seenDigit = true
        }
        return value
    }

    static func cString(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}
