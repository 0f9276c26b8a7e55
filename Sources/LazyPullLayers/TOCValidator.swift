import Foundation
import LazyPullOCI

/// A layer's table of contents after ``TOCValidator`` checked it: every number is in range
/// for what the layer host does with it (inode attributes, offsets in the blob and in the
/// cache, buffer sizes), every name is a list of safe components, and every regular file's
/// chunks cover it exactly. Code working on these values cannot trap on them.
public struct ValidatedTOC: Sendable {
    /// A piece of a regular file: `fileOffset ..< fileOffset + size` of the file is the data
    /// at `innerOffset` of what `compressedStart ..< compressedEnd` of the blob decompresses
    /// to, and has `digest` (always sha256).
    public struct Chunk: Sendable, Equatable {
        public var fileOffset: Int64
        public var size: Int64
        public var compressedStart: Int64
        public var compressedEnd: Int64
        public var innerOffset: Int64
        public var digest: Digest
    }

    public struct ExtendedAttribute: Sendable, Equatable {
        public var name: String
        public var value: [UInt8]
    }

    public enum Kind: Sendable, Equatable {
        case directory, regular, symlink, hardlink, characterDevice, blockDevice, fifo
    }

    public struct Entry: Sendable {
        /// The name as the TOC writes it (for messages).
        public var name: String
        /// Its components: none empty, `.` or `..`, none with a NUL or longer than 255 bytes.
        public var path: [String]
        public var kind: Kind
        /// A regular file's size; 0 for anything else.
        public var size: Int64
        /// Seconds since the epoch.
        public var modificationTime: Int64
        /// `mode & 0o7777`.
        public var permissions: UInt32
        public var uid: UInt32
        public var gid: UInt32
        /// Devices only, within Linux's `dev_t` (12-bit major, 20-bit minor).
        public var deviceMajor: UInt32
        public var deviceMinor: UInt32
        /// A symbolic link's target as written (no NUL, at most ``TOCValidator/maxLinkTargetLength`` bytes).
        public var linkTarget: String
        /// A hard link's target, as components from the layer root.
        public var hardlinkTarget: [String]
        public var xattrs: [ExtendedAttribute]
        /// A regular file's chunks, in file order, covering `0 ..< size` exactly.
        public var chunks: [Chunk]
        /// Where the entry's compressed data starts in the blob, when the TOC says.
        public var offset: Int64?
    }

    public var entries: [Entry]
    /// Where the file data ends in the blob: every chunk ends at or before it.
    public var dataEnd: Int64
    /// The sizes of all regular files added up (it fits in an `Int64`).
    public var regularBytes: Int64
}

/// Checks a decoded TOC (eStargz `stargz.index.json` or a zstd:chunked manifest: the same
/// schema, containerd/stargz-snapshotter docs/estargz.md "TOC, TOCEntries and Footer") once,
/// where it enters the layer host, into a ``ValidatedTOC``. Anything out of range is a
/// ``LazyPullError`` naming the layer, the entry and the rule broken: a TOC cannot make the
/// host trap, allocate without bound, or serve bytes that no chunk of it covers.
public enum TOCValidator {
    /// Entries (files and chunks) in one TOC. stargz-snapshotter bounds a TOC by its bytes;
    /// a decoded entry costs the layer host several hundred bytes (a 1.7 M entry TOC cost
    /// 1.3 GB), so this bounds the tree to a few hundred MB. The largest Debian layers
    /// (texlive-full) have about 200,000 files.
    public static let maxEntries = 500_000
    /// Components in one path. Linux's `PATH_MAX` (4096 bytes) allows 2048; real trees
    /// stay far below 100. Bounds the work per lookup and every walk over the tree.
    public static let maxPathDepth = 512
    /// Bytes in one entry's name or a hard link's target (`PATH_MAX`).
    public static let maxNameLength = 4096
    /// Bytes in a symbolic link's target (`PATH_MAX`).
    public static let maxLinkTargetLength = 4096
    /// Bytes in an extended attribute's name (`XATTR_NAME_MAX`) and value (`XATTR_SIZE_MAX`).
    public static let maxXattrNameLength = 255
    public static let maxXattrValueLength = 64 << 10
    /// Uncompressed bytes of one chunk, and of its frame up to its end (`innerOffset + size`):
    /// a read decompresses that much into memory at once. eStargz writes 4 MiB chunks.
    public static let maxChunkSize: Int64 = 64 << 20
    /// Compressed bytes fetched for one chunk (its gzip members or zstd frame, and whatever
    /// headers sit between it and the next offset the TOC names).
    public static let maxCompressedChunkSize: Int64 = 2 * maxChunkSize
    /// Linux's `dev_t` as the kernel and FUSE carry it (`MINORBITS` 20, 12 bits of major).
    public static let maxDeviceMajor: UInt32 = (1 << 12) - 1
    public static let maxDeviceMinor: UInt32 = (1 << 20) - 1

    /// Checks `toc` of `layer`, whose file data ends at `dataEnd` in the blob.
    public static func validate(_ toc: LayerTOC, layer: Digest, dataEnd: Int64) throws -> ValidatedTOC {
        guard dataEnd >= 0 else {
            throw LazyPullError(.hostileLayer, "layer \(layer): TOC data end \(dataEnd) is negative")
        }
        guard toc.entries.count <= maxEntries else {
            throw LazyPullError(.hostileLayer, "layer \(layer): TOC has \(toc.entries.count) entries, more than the limit of \(maxEntries)")
        }
        var checker = Checker(layer: layer, dataEnd: dataEnd)
        // Chunks without an explicit end run to the next offset any entry names.
        var offsets: [Int64] = []
        offsets.reserveCapacity(toc.entries.count)
        for entry in toc.entries {
            guard let offset = entry.offset else { continue }
            guard offset >= 0, offset <= dataEnd else {
                throw checker.failure(entry.name, "offset \(offset) is outside the blob's data (0 ..< \(dataEnd))")
            }
            offsets.append(offset)
        }
        offsets.sort()
        checker.offsets = offsets
        var entries: [ValidatedTOC.Entry] = []
        entries.reserveCapacity(toc.entries.count)
        for entry in toc.entries {
            try checker.add(entry, to: &entries)
        }
        try checker.finishFile(in: &entries)
        return ValidatedTOC(entries: entries, dataEnd: dataEnd, regularBytes: checker.regularBytes)
    }

    /// The state of one validation pass.
    private struct Checker {
        let layer: Digest
        let dataEnd: Int64
        var offsets: [Int64] = []
        var regularBytes: Int64 = 0
        /// The regular file whose chunk entries may follow: its index and bytes covered so far.
        var open: (index: Int, covered: Int64)?

        init(layer: Digest, dataEnd: Int64) {
            self.layer = layer
            self.dataEnd = dataEnd
        }

        func failure(_ name: String, _ rule: String, _ code: LazyPullError.Code = .hostileLayer) -> LazyPullError {
            LazyPullError(code, "layer \(layer): TOC entry \(TOCValidator.quoted(name)): \(rule)")
        }

        mutating func add(_ entry: TOCEntry, to entries: inout [ValidatedTOC.Entry]) throws {
            if entry.type == "chunk" {
                guard let file = open else {
                    throw failure(entry.name, "chunk entry does not follow a regular file or its chunks")
                }
                let fileSize = entries[file.index].size
                let chunk = try self.chunk(entry, at: entry.chunkOffset ?? 0, expected: file.covered, fileSize: fileSize,
                                           digest: entry.chunkDigest)
                entries[file.index].chunks.append(chunk)
                open = (file.index, chunk.fileOffset + chunk.size)   // ≤ fileSize: checked
                return
            }
            try finishFile(in: &entries)
            let validated = try self.entry(entry)
            entries.append(validated)
            if validated.kind == .regular {
                let (sum, overflow) = regularBytes.addingReportingOverflow(validated.size)
                guard !overflow else {
                    throw failure(entry.name, "regular files add up to more than \(Int64.max) bytes")
                }
                regularBytes = sum
                open = (entries.count - 1, validated.chunks.last.map { $0.fileOffset + $0.size } ?? 0)
            }
        }

        /// The open regular file's chunks must cover it exactly.
        mutating func finishFile(in entries: inout [ValidatedTOC.Entry]) throws {
            guard let file = open else { return }
            open = nil
            let size = entries[file.index].size
            guard file.covered == size else {
                throw failure(entries[file.index].name, "chunks cover \(file.covered) of its \(size) bytes")
            }
        }

        func entry(_ entry: TOCEntry) throws -> ValidatedTOC.Entry {
            let name = entry.name
            guard name.utf8.count <= TOCValidator.maxNameLength else {
                throw failure(name, "name is longer than \(TOCValidator.maxNameLength) bytes")
            }
            guard !name.utf8.contains(0) else { throw failure(name, "name contains a NUL byte") }
            let path: [String]
            do {
                path = try LayerUnpacker.components(of: name, entry: name)
            } catch let error as LazyPullError {
                throw LazyPullError(error.code, "layer \(layer): TOC \(error.message)")
            }
            guard path.count <= TOCValidator.maxPathDepth else {
                throw failure(name, "path is deeper than \(TOCValidator.maxPathDepth) components")
            }
            let kind: ValidatedTOC.Kind
            switch entry.type {
            case "dir": kind = .directory
            case "reg": kind = .regular
            case "symlink": kind = .symlink
            case "hardlink": kind = .hardlink
            case "char": kind = .characterDevice
            case "block": kind = .blockDevice
            case "fifo": kind = .fifo
            default: throw failure(name, "unknown type \(TOCValidator.quoted(entry.type))", .invalidLayer)
            }
            guard !path.isEmpty || kind == .directory else { throw failure(name, "names the layer root but is not a directory") }

            let mode = entry.mode ?? 0
            guard mode >= 0, mode <= Int64(UInt32.max) else { throw failure(name, "mode \(mode) is out of range") }
            let uid = try id(entry.uid, "uid", name)
            let gid = try id(entry.gid, "gid", name)
            let size = entry.size ?? 0
            guard size >= 0 else { throw failure(name, "size \(size) is negative") }
            let modificationTime: Int64
            do {
                modificationTime = try TOCValidator.parseTime(entry.modtime)
            } catch {
                throw failure(name, "modtime \(TOCValidator.quoted(entry.modtime ?? "")) is not an RFC 3339 time", .invalidLayer)
            }
            var validated = ValidatedTOC.Entry(
                name: name, path: path, kind: kind, size: kind == .regular ? size : 0,
                modificationTime: modificationTime, permissions: UInt32(mode) & 0o7777, uid: uid, gid: gid,
                deviceMajor: 0, deviceMinor: 0, linkTarget: "", hardlinkTarget: [], xattrs: [], chunks: [],
                offset: entry.offset)
            validated.xattrs = try xattrs(entry.xattrs ?? [:], name)

            switch kind {
            case .regular:
                if size > 0 {
                    guard entry.chunkOffset ?? 0 == 0 else {
                        throw failure(name, "its first chunk starts at \(entry.chunkOffset ?? 0), not 0")
                    }
                    validated.chunks = [try chunk(entry, at: 0, expected: 0, fileSize: size,
                                                  digest: entry.chunkDigest ?? entry.digest)]
                }
            case .symlink:
                let target = entry.linkName ?? ""
                guard target.utf8.count <= TOCValidator.maxLinkTargetLength, !target.utf8.contains(0) else {
                    throw failure(name, "symbolic link target has a NUL byte or is longer than \(TOCValidator.maxLinkTargetLength) bytes")
                }
                validated.linkTarget = target
            case .hardlink:
                let target = entry.linkName ?? ""
                guard target.utf8.count <= TOCValidator.maxNameLength, !target.utf8.contains(0) else {
                    throw failure(name, "hard link target has a NUL byte or is longer than \(TOCValidator.maxNameLength) bytes")
                }
                do {
                    validated.hardlinkTarget = try LayerUnpacker.components(of: target, entry: name)
                } catch let error as LazyPullError {
                    throw LazyPullError(error.code, "layer \(layer): TOC hard link target: \(error.message)")
                }
                guard !validated.hardlinkTarget.isEmpty, validated.hardlinkTarget.count <= TOCValidator.maxPathDepth else {
                    throw failure(name, "hard link target \(TOCValidator.quoted(target)) is the root or too deep")
                }
            case .characterDevice, .blockDevice:
                let major = entry.devMajor ?? 0, minor = entry.devMinor ?? 0
                guard major >= 0, major <= Int(TOCValidator.maxDeviceMajor), minor >= 0, minor <= Int(TOCValidator.maxDeviceMinor) else {
                    throw failure(name, "device \(major):\(minor) is outside 0...\(TOCValidator.maxDeviceMajor):0...\(TOCValidator.maxDeviceMinor)")
                }
                validated.deviceMajor = UInt32(major)
                validated.deviceMinor = UInt32(minor)
            case .directory, .fifo:
                break
            }
            return validated
        }

        /// A uid or gid: 0 ..< 2^32 - 1 (`(uid_t)-1` means "no owner" to the kernel).
        func id(_ value: Int?, _ what: String, _ name: String) throws -> UInt32 {
            let value = value ?? 0
            guard value >= 0, value < Int(UInt32.max) else { throw failure(name, "\(what) \(value) is out of range") }
            return UInt32(value)
        }

        func xattrs(_ raw: [String: String], _ name: String) throws -> [ValidatedTOC.ExtendedAttribute] {
            try raw.sorted { $0.key < $1.key }.map { key, value in
                guard !key.isEmpty, key.utf8.count <= TOCValidator.maxXattrNameLength, !key.utf8.contains(0) else {
                    throw failure(name, "xattr name \(TOCValidator.quoted(key)) is empty, has a NUL byte or is longer than \(TOCValidator.maxXattrNameLength) bytes")
                }
                // Base64 is 4 bytes per 3: reject long text before decoding it.
                guard value.utf8.count <= (TOCValidator.maxXattrValueLength / 3 + 1) * 4,
                      let bytes = Data(base64Encoded: value) else {
                    throw failure(name, "xattr \(TOCValidator.quoted(key)) is not base64 of at most \(TOCValidator.maxXattrValueLength) bytes")
                }
                guard bytes.count <= TOCValidator.maxXattrValueLength else {
                    throw failure(name, "xattr \(TOCValidator.quoted(key)) is longer than \(TOCValidator.maxXattrValueLength) bytes")
                }
                return ValidatedTOC.ExtendedAttribute(name: key, value: Array(bytes))
            }
        }

        /// One chunk of a file of `fileSize` bytes whose chunks so far cover `expected` bytes:
        /// it must start there, be non-empty and inside the file (no `chunkSize`: the rest of
        /// it), and its compressed bytes must lie inside the blob's data.
        func chunk(_ entry: TOCEntry, at fileOffset: Int64, expected: Int64, fileSize: Int64,
                   digest: String?) throws -> ValidatedTOC.Chunk {
            let name = entry.name
            guard fileOffset == expected else {
                throw failure(name, "chunk at file offset \(fileOffset) does not start where the previous one ends (\(expected))")
            }
            // fileOffset == expected ≤ fileSize: no overflow.
            let remaining = fileSize - fileOffset
            guard remaining > 0 else { throw failure(name, "chunk at \(fileOffset) is past the end of its \(fileSize)-byte file") }
            let requested = entry.chunkSize ?? 0
            let size = requested == 0 ? remaining : requested
            guard size > 0, size <= remaining else {
                throw failure(name, "chunk size \(requested) at \(fileOffset) does not fit its \(fileSize)-byte file")
            }
            guard size <= TOCValidator.maxChunkSize else {
                throw failure(name, "chunk of \(size) bytes is larger than the limit of \(TOCValidator.maxChunkSize)")
            }
            let inner = entry.innerOffset ?? 0
            let (frame, overflow) = inner.addingReportingOverflow(size)
            guard inner >= 0, !overflow, frame <= TOCValidator.maxChunkSize else {
                throw failure(name, "inner offset \(inner) with a chunk of \(size) bytes is outside 0...\(TOCValidator.maxChunkSize)")
            }
            guard let start = entry.offset else { throw failure(name, "chunk has no offset") }
            guard start < dataEnd else {   // start ≥ 0: checked with every offset
                throw failure(name, "chunk offset \(start) is at or past the end of the blob's data (\(dataEnd))")
            }
            let end: Int64
            if let explicit = entry.endOffset, explicit != 0 {
                guard explicit > start, explicit <= dataEnd else {
                    throw failure(name, "chunk end offset \(explicit) is outside \(start + 1)...\(dataEnd)")
                }
                end = explicit
            } else {
                end = next(after: start) ?? dataEnd
            }
            guard end - start <= TOCValidator.maxCompressedChunkSize else {
                throw failure(name, "compressed chunk of \(end - start) bytes is larger than the limit of \(TOCValidator.maxCompressedChunkSize)")
            }
            guard let text = digest, let parsed = try? Digest(parsing: text), parsed.algorithm == "sha256" else {
                throw failure(name, "chunk has no valid sha256 digest")
            }
            return ValidatedTOC.Chunk(fileOffset: fileOffset, size: size, compressedStart: start, compressedEnd: end,
                                      innerOffset: inner, digest: parsed)
        }

        /// The smallest offset any entry names past `start`.
        func next(after start: Int64) -> Int64? {
            var lo = 0, hi = offsets.count
            while lo < hi {
                let mid = lo + (hi - lo) / 2
                if offsets[mid] <= start { lo = mid + 1 } else { hi = mid }
            }
            return lo < offsets.count ? offsets[lo] : nil
        }
    }

    /// `text` quoted for a one-line message: escapes control characters, at most 200 characters.
    public static func quoted(_ text: String) -> String {
        let shown = text.count > 200 ? String(text.prefix(200)) + "…" : text
        return String(reflecting: shown)
    }

    /// RFC 3339 times as the TOC writes them (`2006-01-02T15:04:05Z`, maybe with a fraction
    /// or a numeric offset); whole seconds, as the tar headers of these formats carry. No
    /// modtime is the epoch. Parsed by hand: a formatter per entry would dominate building a
    /// large layer's tree.
    public static func parseTime(_ text: String?) throws -> Int64 {
        guard let text, !text.isEmpty else { return 0 }
        let b = Array(text.utf8)
        func number(_ range: Range<Int>) -> Int? {
            guard range.lowerBound >= 0, range.upperBound <= b.count else { return nil }
            var v = 0
            for i in range {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return nil }
                v = v * 10 + Int(b[i] - 0x30)   // at most 4 digits
            }
            return v
        }
        guard b.count >= 20, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"),
              b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":"),
              let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
              let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19) else {
            throw LazyPullError(.invalidLayer, "TOC modtime \"\(text)\" is not RFC 3339")
        }
        var i = 19
        if i < b.count && b[i] == UInt8(ascii: ".") {
            i += 1
            while i < b.count && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
        }
        var offset = 0
        if i < b.count && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")),
           let oh = number((i + 1)..<(i + 3)), let om = number((i + 4)..<(i + 6)) {
            offset = (oh * 3600 + om * 60) * (b[i] == UInt8(ascii: "-") ? -1 : 1)
        } else if !(i < b.count && (b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z"))) {
            throw LazyPullError(.invalidLayer, "TOC modtime \"\(text)\" has no time zone")
        }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        return Int64(timegm(&parts)) - Int64(offset)
    }
}
