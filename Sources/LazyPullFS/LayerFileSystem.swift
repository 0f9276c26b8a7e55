import CLazyPullShims
import Foundation
import LazyPullFUSE
import LazyPullLayers
import LazyPullOCI
import Synchronization

/// A piece of a regular file's content: where it sits in the file, where its compressed
/// bytes sit in the blob, and the digest the verified TOC gives it.
struct Chunk: Sendable {
    var fileOffset: Int64
    var size: Int64
    var compressedStart: Int64
    var compressedEnd: Int64
    /// Offset of the chunk inside its decompressed frame (several chunks may share one).
    var innerOffset: Int64
    var digest: Digest
}

/// One inode of the layer tree.
struct Node: Sendable {
    var attributes: stat
    var children: [(name: String, inode: UInt64)] = []
    var childIndex: [String: UInt64] = [:]
    var linkTarget = ""
    var xattrs: [(name: String, value: [UInt8])] = []
    var chunks: [Chunk] = []
}

/// The file system of one eStargz or zstd:chunked layer, in overlayfs lower format, built from
/// its verified table of contents. Metadata is answered from memory; file contents are
/// fetched chunk by chunk through `fetch` (HTTP Range) the first time they are read, verified
/// against the chunk digest, and kept. A chunk that fails verification is never served.
public final class LayerFileSystem: FUSEFileSystem, @unchecked Sendable {
    private var nodes: [Node] = []           // index = inode - 1; immutable after init
    private let format: LazyLayerFormat
    private let fetch: @Sendable (Int64, Int64) throws -> [UInt8]
    private let cache: ChunkCache
    /// Every chunk in blob order; the chunks of files before `.prefetch.landmark` come first
    /// in `prefetchCount`.
    private var allChunks: [Chunk] = []
    private var prefetchCount = 0
    private let activity = Mutex(Activity())
    /// Compressed bytes of file data in the blob (the TOC excluded).
    public let dataSize: Int64

    struct Activity {
        var fetchedBytes: Int64 = 0
        var waitingReads = 0
        var lastRead = Date.distantPast
        var background = BackgroundState.off
        var stopped = false
        var prefetchFinished = false
    }

    /// Names that are format metadata, not image content (DESIGN §5): hidden from the tree.
    static let hiddenNames: Set<String> = ["stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"]

    /// `cacheDirectory` holds verified chunks, shared by every layer (chunks are named by digest).
    public init(located: LayerTOCReader.Located, cacheDirectory: String,
                fetch: @escaping @Sendable (Int64, Int64) throws -> [UInt8]) throws {
        self.format = located.format
        self.fetch = fetch
        self.cache = try ChunkCache(directory: cacheDirectory)
        self.dataSize = located.dataEnd
        var root = stat()
        root.st_mode = S_IFDIR | 0o755
        root.st_nlink = 2
        root.st_ino = 1
        nodes = [Node(attributes: root)]
        try build(located.toc, dataEnd: located.dataEnd)
        allChunks = nodes.flatMap(\.chunks).sorted { $0.compressedStart < $1.compressedStart }
        if let landmark = located.toc.entries.first(where: { $0.name == ".prefetch.landmark" })?.offset {
            prefetchCount = allChunks.firstIndex { $0.compressedStart >= landmark } ?? allChunks.count
        }
    }

    // MARK: Building the tree

    private func build(_ toc: LayerTOC, dataEnd: Int64) throws {
        let offsets = Array(Set(toc.entries.compactMap(\.offset))).sorted()
        func compressedEnd(after start: Int64, explicit: Int64?) -> Int64 {
            if let explicit, explicit > start { return explicit }
            var lo = 0, hi = offsets.count
            while lo < hi { let mid = (lo + hi) / 2; if offsets[mid] <= start { lo = mid + 1 } else { hi = mid } }
            return lo < offsets.count ? offsets[lo] : dataEnd
        }
        var lastFile: UInt64?
        for entry in toc.entries {
            let path = try LayerUnpacker.components(of: entry.name, entry: entry.name)
            if entry.type == "chunk" {
                guard let file = lastFile, let start = entry.offset, let digest = entry.chunkDigest else {
                    throw LazyPullError(.invalidLayer, "TOC chunk entry \"\(entry.name)\" without a file, offset or digest")
                }
                let fileSize = Int64(nodes[Int(file - 1)].attributes.st_size)
                let chunkOffset = entry.chunkOffset ?? 0
                let size = (entry.chunkSize ?? 0) > 0 ? entry.chunkSize! : fileSize - chunkOffset
                nodes[Int(file - 1)].chunks.append(Chunk(
                    fileOffset: chunkOffset, size: size, compressedStart: start,
                    compressedEnd: compressedEnd(after: start, explicit: entry.endOffset),
                    innerOffset: entry.innerOffset ?? 0, digest: try Digest(parsing: digest)))
                continue
            }
            guard let base = path.last else { continue }       // the root entry keeps defaults
            if path.count == 1 && Self.hiddenNames.contains(base) { continue }
            let parent = try directory(Array(path.dropLast()))
            if base == ".wh..wh..opq" {
                nodes[Int(parent - 1)].xattrs.append(("trusted.overlay.opaque", Array("y".utf8)))
                continue
            }
            if base.hasPrefix(".wh.") {
                var st = stat()
                st.st_mode = S_IFCHR
                st.st_rdev = lp_makedev(0, 0)
                st.st_nlink = 1
                st.st_uid = UInt32(entry.uid ?? 0)
                st.st_gid = UInt32(entry.gid ?? 0)
                _ = add(Node(attributes: st), named: String(base.dropFirst(4)), in: parent)
                continue
            }
            var st = stat()
            st.st_nlink = 1
            st.st_uid = UInt32(entry.uid ?? 0)
            st.st_gid = UInt32(entry.gid ?? 0)
            let seconds = try Self.parseTime(entry.modtime)
            st.st_mtim = timespec(tv_sec: Int(seconds), tv_nsec: 0)
            st.st_atim = st.st_mtim
            st.st_ctim = st.st_mtim
            let permissions = mode_t(entry.mode ?? 0) & 0o7777
            var node = Node(attributes: st)
            node.xattrs = try (entry.xattrs ?? [:]).sorted { $0.key < $1.key }.map { name, value in
                guard let bytes = Data(base64Encoded: value) else {
                    throw LazyPullError(.invalidLayer, "TOC entry \"\(entry.name)\": xattr \(name) is not base64")
                }
                return (name, Array(bytes))
            }
            switch entry.type {
            case "dir":
                node.attributes.st_mode = S_IFDIR | permissions
                node.attributes.st_nlink = 2
                if let existing = nodes[Int(parent - 1)].childIndex[base],
                   nodes[Int(existing - 1)].attributes.st_mode & S_IFMT == S_IFDIR {
                    // An implicit parent made earlier: take the entry's attributes, keep children.
                    node.children = nodes[Int(existing - 1)].children
                    node.childIndex = nodes[Int(existing - 1)].childIndex
                    node.xattrs += nodes[Int(existing - 1)].xattrs.filter { $0.name.hasPrefix("trusted.overlay.") }
                    node.attributes.st_ino = UInt(existing)
                    nodes[Int(existing - 1)] = node
                    continue
                }
                _ = add(node, named: base, in: parent)
            case "reg":
                node.attributes.st_mode = S_IFREG | permissions
                let size = entry.size ?? 0
                node.attributes.st_size = Int(size)
                node.attributes.st_blocks = Int((size + 511) / 512)
                if size > 0 {
                    guard let start = entry.offset, let digest = entry.chunkDigest ?? entry.digest else {
                        throw LazyPullError(.invalidLayer, "TOC entry \"\(entry.name)\" has content but no offset or digest")
                    }
                    let chunkSize = (entry.chunkSize ?? 0) > 0 ? entry.chunkSize! : size
                    node.chunks = [Chunk(fileOffset: 0, size: chunkSize, compressedStart: start,
                                         compressedEnd: compressedEnd(after: start, explicit: entry.endOffset),
                                         innerOffset: entry.innerOffset ?? 0, digest: try Digest(parsing: digest))]
                }
                lastFile = add(node, named: base, in: parent)
            case "symlink":
                node.attributes.st_mode = S_IFLNK | 0o777
                node.linkTarget = entry.linkName ?? ""
                node.attributes.st_size = node.linkTarget.utf8.count
                _ = add(node, named: base, in: parent)
            case "hardlink":
                let target = try LayerUnpacker.components(of: entry.linkName ?? "", entry: entry.name)
                guard let inode = lookupPath(target), nodes[Int(inode - 1)].attributes.st_mode & S_IFMT != S_IFDIR else {
                    throw LazyPullError(.invalidLayer, "TOC hardlink \"\(entry.name)\" to missing \"\(entry.linkName ?? "")\"")
                }
                nodes[Int(inode - 1)].attributes.st_nlink += 1
                link(inode, named: base, in: parent)
            case "char", "block", "fifo":
                let kind: mode_t = entry.type == "fifo" ? S_IFIFO : (entry.type == "block" ? S_IFBLK : S_IFCHR)
                node.attributes.st_mode = kind | permissions
                node.attributes.st_rdev = lp_makedev(UInt32(entry.devMajor ?? 0), UInt32(entry.devMinor ?? 0))
                _ = add(node, named: base, in: parent)
            default:
                throw LazyPullError(.invalidLayer, "TOC entry \"\(entry.name)\" has unknown type \"\(entry.type)\"")
            }
        }
    }

    /// The directory at `path`, created (0755, root) when the TOC did not list it first.
    private func directory(_ path: [String]) throws -> UInt64 {
        var current: UInt64 = 1
        for component in path {
            if let child = nodes[Int(current - 1)].childIndex[component] {
                guard nodes[Int(child - 1)].attributes.st_mode & S_IFMT == S_IFDIR else {
                    throw LazyPullError(.hostileLayer, "TOC entry goes through \"\(component)\", which is not a directory")
                }
                current = child
            } else {
                var st = stat()
                st.st_mode = S_IFDIR | 0o755
                st.st_nlink = 2
                current = add(Node(attributes: st), named: component, in: current)
            }
        }
        return current
    }

    private func lookupPath(_ path: [String]) -> UInt64? {
        var current: UInt64 = 1
        for component in path {
            guard let child = nodes[Int(current - 1)].childIndex[component] else { return nil }
            current = child
        }
        return current
    }

    /// Adds a new inode; a name that already exists in the directory is replaced, as a later
    /// tar entry replaces an earlier one.
    private func add(_ node: Node, named name: String, in parent: UInt64) -> UInt64 {
        var node = node
        let inode = UInt64(nodes.count + 1)
        node.attributes.st_ino = UInt(inode)
        nodes.append(node)
        link(inode, named: name, in: parent)
        if node.attributes.st_mode & S_IFMT == S_IFDIR { nodes[Int(parent - 1)].attributes.st_nlink += 1 }
        return inode
    }

    private func link(_ inode: UInt64, named name: String, in parent: UInt64) {
        if nodes[Int(parent - 1)].childIndex[name] != nil {
            nodes[Int(parent - 1)].children.removeAll { $0.name == name }
        }
        nodes[Int(parent - 1)].childIndex[name] = inode
        nodes[Int(parent - 1)].children.append((name, inode))
    }

    /// RFC 3339 times as the TOC writes them (`2006-01-02T15:04:05Z`, maybe with a fraction
    /// or a numeric offset); whole seconds, as the tar headers of these formats carry.
    /// Parsed by hand: a formatter per entry would dominate building a large layer's tree.
    static func parseTime(_ text: String?) throws -> Int64 {
        guard let text, !text.isEmpty else { return 0 }
        let b = Array(text.utf8)
        func number(_ range: Range<Int>) -> Int? {
            guard range.upperBound <= b.count else { return nil }
            var v = 0
            for i in range {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return nil }
                v = v * 10 + Int(b[i] - 0x30)
            }
            return v
        }
        guard b.count >= 20, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: " "),
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

    // MARK: FUSEFileSystem

    private func node(_ inode: UInt64) throws -> Node {
        guard inode >= 1, inode <= UInt64(nodes.count) else { throw FUSEError(ENOENT) }
        return nodes[Int(inode - 1)]
    }

    public func lookup(parent: UInt64, name: String) throws -> FUSEEntry {
        guard let inode = try node(parent).childIndex[name] else { throw FUSEError(ENOENT) }
        return FUSEEntry(inode: inode, attributes: nodes[Int(inode - 1)].attributes)
    }

    public func attributes(of inode: UInt64) throws -> stat { try node(inode).attributes }

    public func readlink(_ inode: UInt64) throws -> String {
        let n = try node(inode)
        guard n.attributes.st_mode & S_IFMT == S_IFLNK else { throw FUSEError(EINVAL) }
        return n.linkTarget
    }

    public func open(_ inode: UInt64) throws {
        guard try node(inode).attributes.st_mode & S_IFMT == S_IFREG else { throw FUSEError(EISDIR) }
    }

    public func read(_ inode: UInt64, offset: Int64, size: Int) throws -> [UInt8] {
        let n = try node(inode)
        // The background fetch yields while on-demand reads wait.
        activity.withLock { $0.waitingReads += 1 }
        defer { activity.withLock { $0.waitingReads -= 1; $0.lastRead = Date() } }
        let fileSize = Int64(n.attributes.st_size)
        let end = min(fileSize, offset + Int64(size))
        guard offset < end else { return [] }
        var out = [UInt8](repeating: 0, count: Int(end - offset))
        // A first read of a file fetches the rest of it in the same request: a program that
        // opens a file nearly always reads it to the end (one round trip instead of many).
        if let first = n.chunks.firstIndex(where: { $0.fileOffset + $0.size > offset }), !cache.contains(n.chunks[first].digest) {
            try fetchMissing(Array(n.chunks[first...]), yielding: false, groupLimit: 16 << 20)
        }
        for chunk in n.chunks where chunk.fileOffset < end && chunk.fileOffset + chunk.size > offset {
            let from = max(offset, chunk.fileOffset)
            let to = min(end, chunk.fileOffset + chunk.size)
            try out.withUnsafeMutableBytes { buffer in
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(to - offset)])
                try cache.read(chunk.digest, at: from - chunk.fileOffset, into: slice) { try fetchChunk(chunk) }
            }
        }
        return out
    }

    public func directoryEntries(_ inode: UInt64) throws -> [FUSEDirectoryEntry] {
        let n = try node(inode)
        return n.children.map { FUSEDirectoryEntry(name: $0.name, entry: FUSEEntry(inode: $0.inode, attributes: nodes[Int($0.inode - 1)].attributes)) }
    }

    public func xattr(_ inode: UInt64, name: String) throws -> [UInt8] {
        guard let x = try node(inode).xattrs.first(where: { $0.name == name }) else { throw FUSEError(ENODATA) }
        return x.value
    }

    public func xattrNames(_ inode: UInt64) throws -> [String] { try node(inode).xattrs.map(\.name) }

    // MARK: Chunks

    /// Fetches, decompresses and verifies one chunk. A chunk whose digest does not match is
    /// an error (the read fails with EIO), never data.
    private func fetchChunk(_ chunk: Chunk) throws -> [UInt8] {
        let compressed = try fetch(chunk.compressedStart, chunk.compressedEnd - chunk.compressedStart)
        activity.withLock { $0.fetchedBytes += Int64(compressed.count) }
        return try decode(chunk, from: compressed)
    }

    /// Decompresses and verifies one chunk from its compressed bytes.
    private func decode(_ chunk: Chunk, from compressed: ArraySlice<UInt8>) throws -> [UInt8] {
        try decode(chunk, from: Array(compressed))
    }

    private func decode(_ chunk: Chunk, from compressed: [UInt8]) throws -> [UInt8] {
        let source: ByteSource = format == .estargz ? IsalGzipSource(MemorySource(compressed))
                                                    : try ZstdSource(MemorySource(compressed))
        var data = [UInt8](repeating: 0, count: Int(chunk.innerOffset + chunk.size))
        let n = try data.withUnsafeMutableBytes { try source.readFully(into: $0) }
        guard n == data.count else {
            throw LazyPullError(.invalidLayer, "chunk at \(chunk.compressedStart) decompresses to \(n) bytes, not \(data.count)")
        }
        let bytes = chunk.innerOffset == 0 ? data : Array(data[Int(chunk.innerOffset)...])
        try chunk.digest.verify(Digest.sha256(of: bytes), what: "chunk at offset \(chunk.compressedStart)")
        return bytes
    }
}

struct BackgroundFetchStopped: Error {}

/// Where a layer's background fetch stands.
public enum BackgroundState: String, Sendable, Codable {
    case off, prefetching, running, paused, done, failed
}

extension LayerFileSystem {
    /// Bytes fetched from the registry so far, the layer's data size, and the background state.
    public var progress: (fetched: Int64, total: Int64, background: BackgroundState) {
        activity.withLock { ($0.fetchedBytes, dataSize, $0.background) }
    }

    /// Whether the prefetch of `fetchAll` has ended (done or failed).
    public var prefetchFinished: Bool { activity.withLock { $0.prefetchFinished } }

    /// Ends the background fetch at its next step (the layer was unmounted).
    public func stopBackgroundFetch() {
        activity.withLock { $0.stopped = true }
    }

    /// Fetches the chunks of the files the image author listed before `.prefetch.landmark`,
    /// coalesced into as few requests as possible, then (when `background` is set) every other
    /// chunk in blob order, pausing while on-demand reads wait. Blocks; run it on a thread.
    public func fetchAll(background: Bool) {
        activity.withLock { $0.background = .prefetching }
        do {
            defer { activity.withLock { $0.prefetchFinished = true } }
            try fetchMissing(Array(allChunks[..<prefetchCount]), yielding: false)
            activity.withLock { $0.prefetchFinished = true }
            guard background else { activity.withLock { $0.background = .off }; return }
            // Start once the mount has been quiet for a moment: a starting container reads
            // in bursts, and the background fetch should fill the gaps, not compete.
            activity.withLock { $0.background = .paused }
            var quietSince = Date()
            while Date().timeIntervalSince(quietSince) < 0.5 {
                if activity.withLock({ $0.waitingReads > 0 || $0.lastRead > quietSince }) {
                    quietSince = activity.withLock { max($0.lastRead, Date()) }
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
            activity.withLock { $0.background = .running }
            try fetchMissing(Array(allChunks[prefetchCount...]), yielding: true)
            activity.withLock { $0.background = .done }
        } catch is BackgroundFetchStopped {
            activity.withLock { $0.background = .off }
        } catch {
            FileHandle.standardError.write(Data("lazypull: background fetch stopped: \(error)\n".utf8))
            activity.withLock { $0.background = .failed }
        }
    }

    /// Groups runs of missing chunks that sit next to each other in the blob into one Range
    /// request of at most `groupLimit` compressed bytes.
    private func waitWhileReadsWait() {
        guard activity.withLock({ $0.waitingReads > 0 }) else { return }
        activity.withLock { $0.background = .paused }
        while activity.withLock({ $0.waitingReads > 0 }) { Thread.sleep(forTimeInterval: 0.01) }
        activity.withLock { $0.background = .running }
    }

    /// Background groups stay small (1 MiB: 80 ms at 100 Mbit/s), so an on-demand read never
    /// waits long behind one.
    private func fetchMissing(_ chunks: [Chunk], yielding: Bool, groupLimit: Int64 = 1 << 20) throws {
        var group: [Chunk] = []
        func flush() throws {
            guard let first = group.first, let last = group.last else { return }
            // Readers of these chunks wait for this fetch instead of starting their own. The
            // fetch itself never waits for readers: that would deadlock on our own claims.
            let claimed = Set(group.map(\.digest))
            defer { cache.release(claimed) }
            let compressed = try fetch(first.compressedStart, last.compressedEnd - first.compressedStart)
            activity.withLock { $0.fetchedBytes += Int64(compressed.count) }
            for chunk in group {
                let from = Int(chunk.compressedStart - first.compressedStart)
                let to = Int(chunk.compressedEnd - first.compressedStart)
                let bytes = try decode(chunk, from: compressed[from..<to])
                try cache.insert(bytes, as: chunk.digest)
            }
            group.removeAll()
        }
        for chunk in chunks where !cache.contains(chunk.digest) {
            if let last = group.last, last.compressedEnd != chunk.compressedStart
                || chunk.compressedEnd - group[0].compressedStart > groupLimit {
                try flush()
            }
            // The background yields to on-demand reads, before it claims anything.
            if yielding && group.isEmpty {
                waitWhileReadsWait()
                if activity.withLock({ $0.stopped }) { throw BackgroundFetchStopped() }
            }
            // Someone else fetching it ends the run: contiguity is what makes one request.
            guard cache.claim(chunk.digest) else { try flush(); continue }
            group.append(chunk)
        }
        try flush()
    }
}

/// Verified chunks on disk, one file per chunk digest (`<dir>/sha256/<hex>`), written by
/// temp file and rename so a reader never sees a partial chunk. A missing chunk is fetched
/// once however many readers wait for it; a failed fetch is not remembered, so a later read
/// tries again (the mount recovers when the registry does).
final class ChunkCache: @unchecked Sendable {
    /// Longer than any single fetch may take (its retries are bounded by the fetch timeout).
    static let waitLimit: TimeInterval = 120
    let directory: String
    private let condition = NSCondition()
    private var inFlight: Set<Digest> = []

    init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory + "/sha256", withIntermediateDirectories: true)
    }

    func path(_ digest: Digest) -> String { "\(directory)/\(digest.algorithm)/\(digest.encoded)" }

    /// Copies the chunk's bytes from `offset` into `buffer`, fetching the chunk if needed.
    func read(_ digest: Digest, at offset: Int64, into buffer: UnsafeMutableRawBufferPointer,
              fetch: () throws -> [UInt8]) throws {
        if try pread(digest, at: offset, into: buffer) { return }
        condition.lock()
        // Waiting for another fetch is bounded too: a read never hangs, whatever goes wrong.
        let deadline = Date().addingTimeInterval(Self.waitLimit)
        while inFlight.contains(digest) {
            guard condition.wait(until: deadline) || !inFlight.contains(digest) else {
                condition.unlock()
                throw LazyPullError(.io, "gave up waiting for chunk \(digest) after \(Int(Self.waitLimit)) s")
            }
        }
        if FileManager.default.fileExists(atPath: path(digest)) {
            condition.unlock()
            guard try pread(digest, at: offset, into: buffer) else { throw LazyPullError(.io, "chunk \(digest) vanished from the cache") }
            return
        }
        inFlight.insert(digest)
        condition.unlock()
        defer {
            condition.lock()
            inFlight.remove(digest)
            condition.broadcast()
            condition.unlock()
        }
        let bytes = try fetch()
        try store(bytes, as: digest)
        let n = min(buffer.count, max(0, bytes.count - Int(offset)))
        bytes.withUnsafeBytes { src in buffer.baseAddress!.copyMemory(from: src.baseAddress! + Int(offset), byteCount: n) }
        guard n == buffer.count else { throw LazyPullError(.invalidLayer, "chunk \(digest) is shorter than its TOC entry") }
    }

    private func pread(_ digest: Digest, at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        let fd = open(path(digest), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw LazyPullError(.io, "chunk \(digest) in the cache is shorter than its TOC entry") }
            done += n
        }
        return true
    }

    func contains(_ digest: Digest) -> Bool { access(path(digest), F_OK) == 0 }

    /// Marks a missing chunk as being fetched by the caller; false when it is present or
    /// someone else is fetching it. Every successful claim is ended with ``release(_:)``.
    func claim(_ digest: Digest) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !inFlight.contains(digest), !contains(digest) else { return false }
        inFlight.insert(digest)
        return true
    }

    func release(_ digests: Set<Digest>) {
        condition.lock()
        inFlight.subtract(digests)
        condition.broadcast()
        condition.unlock()
    }

    /// Stores a chunk fetched outside ``read`` (prefetch, background fetch).
    func insert(_ bytes: [UInt8], as digest: Digest) throws {
        if contains(digest) { return }
        try store(bytes, as: digest)
    }

    private func store(_ bytes: [UInt8], as digest: Digest) throws {
        let final = path(digest)
        let temp = final + ".tmp.\(UInt64.random(in: 0...UInt64.max))"
        guard FileManager.default.createFile(atPath: temp, contents: Data(bytes)) else {
            throw LazyPullError(.io, "cannot write \(temp)")
        }
        guard rename(temp, final) == 0 else {
            unlink(temp)
            throw LazyPullError.io("cannot store chunk", path: final, errno: errno)
        }
    }
}
