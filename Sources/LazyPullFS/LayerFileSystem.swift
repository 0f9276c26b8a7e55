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
    /// Position in the layer's chunk list and in its cache's data file (set after the tree
    /// is built).
    var index = 0
    var dataOffset: Int64 = 0
}

/// One inode of the layer tree.
struct Node: Sendable {
    var attributes: stat
    var children: [(name: String, inode: UInt64)] = []
    /// Where each name is in `children`.
    var childPosition: [String: Int] = [:]
    var linkTarget = ""
    var xattrs: [(name: String, value: [UInt8])] = []
    var chunks: [Chunk] = []

    /// The inode of child `name`, if this directory has one.
    func child(_ name: String) -> UInt64? {
        childPosition[name].map { children[$0].inode }
    }
}

/// Reads bytes `offset ..< offset + length` of a layer's blob, passing them to `sink` in order
/// as they arrive (one HTTP Range request: `RegistryClient.streamRange`).
public typealias BlobRangeReader = @Sendable (_ offset: Int64, _ length: Int64,
                                              _ sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Void

/// The file system of one eStargz or zstd:chunked layer, in overlayfs lower format, built from
/// its verified table of contents. Metadata is answered from memory; file contents are
/// fetched chunk by chunk through `fetch` (HTTP Range) the first time they are read, verified
/// against the chunk digest, and kept. A chunk that fails verification is never served.
public final class LayerFileSystem: FUSEFileSystem, @unchecked Sendable {
    var nodes: [Node] = []                   // index = inode - 1; immutable after init
    private let format: LazyLayerFormat
    private let fetch: BlobRangeReader
    let cache: LayerDataCache
    /// Every chunk in blob order; the chunks of files before `.prefetch.landmark` come first
    /// in `prefetchCount`.
    private var allChunks: [Chunk] = []
    private var prefetchCount = 0
    let activity = Mutex(Activity())
    /// On-demand reads, shared by the layers of one layer host: they share the link too.
    let reads: ReadActivity
    /// When this file system was made (the layer mounted).
    let attached = Date()
    /// The background fetch does not start earlier than this after the mount.
    static let backgroundDelay: TimeInterval = 2
    /// A first read fetches the rest of its file when that is at most this many compressed
    /// bytes; past a larger file's read it fetches `readAhead` bytes more.
    static let wholeFileLimit: Int64 = 8 << 20
    static let readAhead: Int64 = 2 << 20
    /// `LAZYPULL_TRACE_READS=1` in the layer host's environment logs every read that waited
    /// for the registry: when, which chunk, how long.
    static let traceReads = ProcessInfo.processInfo.environment["LAZYPULL_TRACE_READS"] == "1"

    static func trace(_ what: String, since started: Date) {
        let at = String(format: "%.3f", started.timeIntervalSince1970.truncatingRemainder(dividingBy: 1000))
        let took = Int(Date().timeIntervalSince(started) * 1000)
        writeStandardError("lazypull trace: \(at) \(what) took \(took) ms\n")
    }
    /// Compressed bytes of file data in the blob (the TOC excluded).
    public let dataSize: Int64
    /// Whether any inode has an extended attribute. When none has, `getxattr` answers ENOSYS
    /// and the kernel stops asking: overlayfs looks up its `trusted.overlay.*` attributes on
    /// every lower entry, a round trip per file otherwise. (Getting an attribute then fails
    /// with EOPNOTSUPP instead of ENODATA; listing them still works and lists none.)
    private let hasExtendedAttributes: Bool

    struct Activity {
        var fetchedBytes: Int64 = 0
        var fetchRequests = 0
        var background = BackgroundState.off
        var stopped = false
        var prefetchFinished = false
        /// Executables and libraries whose dependencies were looked for already.
        var dependenciesSeen: Set<UInt64> = []
        var dependencyHandler: (@Sendable (ELFDependencies) -> Void)?
    }

    /// Names that are format metadata, not image content (DESIGN §5): hidden from the tree.
    static let hiddenNames: Set<String> = ["stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"]

    /// `cacheDirectory` holds the fetched contents of lazy layers, a data file and a map per
    /// layer and TOC, named by `layer` (the blob digest) and the digest of `located.json`
    /// (``LayerCacheFiles``): the layout and every chunk digest a cache file was filled by
    /// come from that one TOC, so an image naming another's layer with a TOC of its own
    /// gets cache files of its own. `reads`: the on-demand reads of every layer whose
    /// background fetch should yield to them (by default, this layer's alone). The TOC is
    /// checked by ``TOCValidator`` first: one that breaks a rule is an error naming it.
    public init(located: LayerTOCReader.Located, layer: Digest, cacheDirectory: String,
                reads: ReadActivity = ReadActivity(),
                fetch: @escaping BlobRangeReader) throws {
        self.reads = reads
        self.format = located.format
        self.fetch = fetch
        self.dataSize = located.dataEnd
        let validated = try TOCValidator.validate(located.toc, layer: layer, dataEnd: located.dataEnd)
        var tree = LayerTree()
        try tree.build(validated, layer: layer)
        var nodes = tree.nodes
        // Every regular file gets its own span of the cache's data file, in tree order. The
        // spans add up to at most the TOC's regular bytes, which fit in an Int64 (validated).
        var index = 0
        var position: Int64 = 0
        for i in nodes.indices where !nodes[i].chunks.isEmpty {
            for c in nodes[i].chunks.indices {
                nodes[i].chunks[c].index = index
                nodes[i].chunks[c].dataOffset = position + nodes[i].chunks[c].fileOffset
                index += 1
            }
            let (next, overflow) = position.addingReportingOverflow(Int64(nodes[i].attributes.st_size))
            guard !overflow else { throw LazyPullError(.hostileLayer, "layer \(layer): its files add up to more than \(Int64.max) bytes") }
            position = next
        }
        self.nodes = nodes
        hasExtendedAttributes = nodes.contains { !$0.xattrs.isEmpty }
        tocDigest = Digest.sha256(of: located.json)
        cache = try LayerDataCache(directory: cacheDirectory, layer: layer, toc: tocDigest, chunkCount: index, dataSize: position)
        allChunks = nodes.flatMap(\.chunks).sorted { $0.compressedStart < $1.compressedStart }
        if let landmark = validated.entries.first(where: { $0.path == [".prefetch.landmark"] })?.offset {
            prefetchCount = allChunks.firstIndex { $0.compressedStart >= landmark } ?? allChunks.count
        }
    }

    /// The digest of the TOC's JSON this layer is served from; with the blob digest, it names
    /// the cache files (``LayerCacheFiles``).
    public let tocDigest: Digest

    // MARK: FUSEFileSystem

    func node(_ inode: UInt64) throws -> Node {
        guard inode >= 1, inode <= UInt64(nodes.count) else { throw FUSEError(ENOENT) }
        return nodes[Int(inode - 1)]
    }

    public func lookup(parent: UInt64, name: String) throws -> FUSEEntry {
        guard let inode = try node(parent).child(name) else { throw FUSEError(ENOENT) }
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
        guard let (position, length) = try prepareRead(inode, offset: offset, size: size) else { return [] }
        var out = [UInt8](repeating: 0, count: length)
        try out.withUnsafeMutableBytes { try cache.read(at: position, into: $0) }
        return out
    }

    /// Served from the cache's data file, which the FUSE server splices into its reply.
    public func readData(_ inode: UInt64, offset: Int64, size: Int) throws -> FUSEReadData {
        guard let (position, length) = try prepareRead(inode, offset: offset, size: size) else { return .bytes([]) }
        return .file(descriptor: cache.dataDescriptor, offset: position, length: length)
    }

    /// Makes sure the chunks under a read are cached (fetching them if needed) and returns
    /// where its bytes are in the cache's data file; nil at or past the end of the file.
    private func prepareRead(_ inode: UInt64, offset: Int64, size: Int) throws -> (position: Int64, length: Int)? {
        let n = try node(inode)
        guard offset >= 0, size >= 0 else { throw FUSEError(EINVAL) }
        let fileSize = Int64(n.attributes.st_size)
        // The kernel's offset may be anything up to Int64.max: past the end is end of file.
        let (requestedEnd, overflow) = offset.addingReportingOverflow(Int64(size))
        let end = overflow ? fileSize : min(fileSize, requestedEnd)
        guard offset < end, let first = n.chunks.first else { return nil }
        // Chunks are in file order: the ones under [offset, end) are one run.
        let from = n.chunks.firstIndex { $0.fileOffset + $0.size > offset } ?? n.chunks.endIndex
        let to = n.chunks[from...].firstIndex { $0.fileOffset >= end } ?? n.chunks.endIndex
        let needed = n.chunks[from..<to]
        if !cache.areVerified(needed) {
            // The background fetch yields while on-demand reads wait.
            let waiting = reads.begin()
            defer { reads.end(waiting) }
            let started = Date()
            if let head = needed.first, !cache.isPresent(head.index) {
                try fetchAhead(inode, chunks: n.chunks, from: from, through: to - 1)
            }
            for chunk in needed { try cache.ensure(chunk) { try fetchChunk(chunk) } }
            if Self.traceReads, let head = needed.first {
                Self.trace("read inode \(inode) chunk at \(head.compressedStart)", since: started)
            }
        } else {
            reads.touch()
            // A large file read in order: its read-ahead moves on before the reader gets there.
            if to < n.chunks.count, Self.isLarge(n.chunks[from...]), cache.isUnclaimed(n.chunks[to].index) {
                try? fetchAhead(inode, chunks: n.chunks, from: to, through: nil)
            }
        }
        // The file's bytes are contiguous in the cache.
        return (first.dataOffset - first.fileOffset + offset, Int(end - offset))
    }

    public func directoryEntries(_ inode: UInt64, from start: Int, limit: Int) throws -> [FUSEDirectoryEntry] {
        let children = try node(inode).children
        // The offset comes from the directory's file position: anything a process seeks to.
        guard start >= 0, start < children.count, limit > 0 else { return [] }
        return children[start..<(start + min(limit, children.count - start))].map {
            FUSEDirectoryEntry(name: $0.name, entry: FUSEEntry(inode: $0.inode, attributes: nodes[Int($0.inode - 1)].attributes))
        }
    }

    public func xattr(_ inode: UInt64, name: String) throws -> [UInt8] {
        guard hasExtendedAttributes else { throw FUSEError(ENOSYS) }
        guard let x = try node(inode).xattrs.first(where: { $0.name == name }) else { throw FUSEError(ENODATA) }
        return x.value
    }

    public func xattrNames(_ inode: UInt64) throws -> [String] { try node(inode).xattrs.map(\.name) }

    /// Fetches what a read of a file wants, `from...through` (nil: nothing, it reads ahead),
    /// and what comes with it (``chunksAhead(_:from:through:)``) in one request. The chunks
    /// under the read come first in the stream: when more follows, the rest streams on a
    /// thread of its own and the read goes on as soon as its own chunks are in.
    private func fetchAhead(_ inode: UInt64, chunks: [Chunk], from: Int, through: Int?) throws {
        var wanted = Self.chunksAhead(chunks, from: from, through: through ?? from)
        var runs: [[Chunk]] = []
        while let run = claimRun(&wanted, groupLimit: .max) { runs.append(run) }
        guard let lastClaimed = runs.last?.last else { return }
        if let through, lastClaimed.index <= chunks[through].index {
            try fetchRuns(runs)
            fetchedWhole(inode)
            return
        }
        let thread = Thread { [self, runs] in
            try? fetchRuns(runs)     // a reader of a chunk that failed fetches it itself
            fetchedWhole(inode)
        }
        thread.stackSize = 512 << 10
        thread.start()
    }

    /// The chunks of a file (`chunks`, in file order) that a fetch wanting `from...through`
    /// takes: the rest of the file when that is at most ``wholeFileLimit`` compressed bytes,
    /// since a program that opens a file nearly always reads it to the end (one round trip
    /// instead of many); else the chunks wanted and ``readAhead`` bytes past them, at least one
    /// chunk (a JVM's module image or ICU's data is read in parts, and fetching all of it would
    /// cost more than the round trips it saves).
    static func chunksAhead(_ chunks: [Chunk], from: Int, through: Int) -> ArraySlice<Chunk> {
        let rest = chunks[from...]
        guard isLarge(rest) else { return rest }
        let wantedEnd = chunks[through].compressedEnd
        let end = rest[(through + 1)...].firstIndex { $0.compressedEnd - wantedEnd > readAhead } ?? rest.endIndex
        return chunks[from..<max(end, min(through + 2, rest.endIndex))]
    }

    /// Whether `chunks` (of one file) are more than ``wholeFileLimit`` compressed bytes.
    static func isLarge(_ chunks: ArraySlice<Chunk>) -> Bool {
        guard let first = chunks.first, let last = chunks.last else { return false }
        return last.compressedEnd - first.compressedStart > wholeFileLimit
    }

    // MARK: Chunks

    /// Fetches, decompresses and verifies one chunk. A chunk whose digest does not match is
    /// an error (the read fails with EIO), never data.
    private func fetchChunk(_ chunk: Chunk) throws -> [UInt8] {
        var compressed: [UInt8] = []
        compressed.reserveCapacity(Int(chunk.compressedEnd - chunk.compressedStart))
        defer { activity.withLock { $0.fetchedBytes += Int64(compressed.count); $0.fetchRequests += 1 } }
        try fetch(chunk.compressedStart, chunk.compressedEnd - chunk.compressedStart) { compressed.append(contentsOf: $0) }
        return try decode(chunk, from: compressed)
    }

    /// Decompresses and verifies one chunk from its compressed bytes.
    private func decode(_ chunk: Chunk, from compressed: [UInt8]) throws -> [UInt8] {
        let source: ByteSource = format == .estargz ? IsalGzipSource(MemorySource(compressed))
                                                    : try ZstdSource(MemorySource(compressed))
        // innerOffset + size ≤ TOCValidator.maxChunkSize (validated): a bounded allocation.
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
struct CacheFull: Error {}

/// A lazy layer's fetching so far: compressed bytes and Range requests, of `totalBytes`.
public struct LayerProgress: Sendable, Codable {
    public var fetchedBytes: Int64
    public var fetchRequests: Int
    public var totalBytes: Int64
    public var background: BackgroundState
}

/// On-demand reads in progress and the time of the last one, across every layer that shares
/// one link to the registry: a background fetch waits until no read is waiting and there has
/// been none for a moment, whichever layer they read.
///
/// A read that has waited longer than ``stuckAfter`` no longer holds anyone back: a registry
/// that hangs or drips for one image stops only that read (it ends by its own deadline), not
/// every other image's background fetch (docs/security.md, rule 7).
public final class ReadActivity: Sendable {
    private struct State {
        var waiting: [Int: Date] = [:]
        var nextID = 0
        var last = Date.distantPast
    }
    private let state = Mutex(State())
    /// How long a waiting read pauses background fetches; reads on a working link take far less.
    static let stuckAfter: TimeInterval = 2

    public init() {}

    /// A read starts waiting for the registry; pass the result to ``end(_:)``.
    func begin() -> Int {
        state.withLock {
            $0.nextID &+= 1
            $0.waiting[$0.nextID] = Date()
            return $0.nextID
        }
    }
    func end(_ id: Int) { state.withLock { $0.waiting[id] = nil; $0.last = Date() } }
    func touch() { state.withLock { $0.last = Date() } }
    /// Whether a read that is not stuck is waiting.
    var waiting: Bool { state.withLock { Self.anyRecent($0.waiting) } }
    var last: Date { state.withLock { $0.last } }
    func busy(since: Date) -> Bool { state.withLock { Self.anyRecent($0.waiting) || $0.last > since } }

    private static func anyRecent(_ waiting: [Int: Date]) -> Bool {
        let now = Date()
        return waiting.values.contains { now.timeIntervalSince($0) < stuckAfter }
    }
}

/// Where a layer's background fetch stands.
public enum BackgroundState: String, Sendable, Codable {
    case off, prefetching, running, paused, done, failed
    /// Stopped because the root's cache reached its size limit (`cache.max_bytes`).
    case cacheFull = "cache-full"
}

extension LayerFileSystem {
    /// What has been fetched so far and where the background fetch stands.
    public var progress: LayerProgress {
        activity.withLock {
            LayerProgress(fetchedBytes: $0.fetchedBytes, fetchRequests: $0.fetchRequests, totalBytes: dataSize,
                          background: $0.background)
        }
    }

    /// Whether the prefetch of `fetchAll` has ended (done or failed).
    public var prefetchFinished: Bool { activity.withLock { $0.prefetchFinished } }

    /// Ends the background fetch at its next step (the layer was unmounted).
    public func stopBackgroundFetch() {
        activity.withLock { $0.stopped = true }
    }

    /// Fetches the chunks of the files the image author listed before `.prefetch.landmark`
    /// (unless `prefetch` is off), coalesced into as few requests as possible, then (when
    /// `background` is set) every other chunk in blob order, pausing while on-demand reads wait
    /// and stopping for good once `budget` says the cache is full. Blocks; run it on a thread.
    public func fetchAll(background: Bool, prefetch: Bool = true, budget: @escaping @Sendable () -> Bool = { true }) {
        activity.withLock { $0.background = .prefetching }
        let prefetched = Result {
            if prefetch { try fetchLandmarkFiles() }
        }
        activity.withLock { $0.prefetchFinished = true }
        do {
            try prefetched.get()
            guard background else { activity.withLock { $0.background = .off }; return }
            // Start once reads have been quiet for a moment, and not in the first seconds after
            // the mount: a container starts a moment after its layers are mounted (containerd
            // still creates it) and then reads in bursts; the background fetch should fill the
            // gaps, not compete for the link.
            activity.withLock { $0.background = .paused }
            let earliest = attached.addingTimeInterval(Self.backgroundDelay)
            var quietSince = Date()
            while Date().timeIntervalSince(quietSince) < 0.5 || Date() < earliest {
                if reads.busy(since: quietSince) {
                    quietSince = max(reads.last, Date())
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
            activity.withLock { $0.background = .running }
            let rest = prefetch ? Array(allChunks[prefetchCount...]) : allChunks
            try fetchMissing(rest, yielding: true, budget: budget)
            activity.withLock { $0.background = .done }
        } catch is BackgroundFetchStopped {
            activity.withLock { $0.background = .off }
        } catch is CacheFull {
            activity.withLock { $0.background = .cacheFull }
        } catch {
            writeStandardError("lazypull: background fetch stopped: \(error)\n")
            activity.withLock { $0.background = .failed }
        }
    }

    /// Fetches the files before `.prefetch.landmark`, as ``fetchAll(background:prefetch:budget:)``
    /// starts with, on a thread of its own: for a layer built before it is mounted. A
    /// `fetchAll` that comes later leaves what this fetches to it.
    public func startPrefetch() {
        guard prefetchCount > 0 else { return }
        let thread = Thread { [self] in try? fetchLandmarkFiles() }
        thread.stackSize = 512 << 10
        thread.start()
    }

    /// The chunks of the files before `.prefetch.landmark`, in one streamed request.
    private func fetchLandmarkFiles() throws {
        try fetchMissing(Array(allChunks[..<prefetchCount]), yielding: false, groupLimit: .max)
    }

    /// Pauses the background fetch while on-demand reads wait.
    private func waitWhileReadsWait() {
        guard reads.waiting else { return }
        activity.withLock { $0.background = .paused }
        while reads.waiting { Thread.sleep(forTimeInterval: 0.01) }
        activity.withLock { $0.background = .running }
    }

    /// Fetches the chunks of `chunks` not cached yet, as runs that sit next to each other in
    /// the blob, of at most `groupLimit` compressed bytes, one Range request each. Background
    /// runs stay small (1 MiB: 80 ms at 100 Mbit/s) and are claimed one at a time, so the
    /// background fetch yields to on-demand reads between them and holds no claim meanwhile.
    func fetchMissing(_ chunks: [Chunk], yielding: Bool, groupLimit: Int64 = 1 << 20,
                      budget: () -> Bool = { true }) throws {
        var rest = chunks[...]
        guard yielding else {
            var runs: [[Chunk]] = []
            while let run = claimRun(&rest, groupLimit: groupLimit) { runs.append(run) }
            return try fetchRuns(runs)
        }
        while !rest.isEmpty {
            waitWhileReadsWait()
            if activity.withLock({ $0.stopped }) { throw BackgroundFetchStopped() }
            guard budget() else { throw CacheFull() }
            guard let run = claimRun(&rest, groupLimit: groupLimit) else { return }
            try fetchClaimed(run)
        }
    }

    /// Claims the next run of chunks from the front of `chunks` that are neither cached nor
    /// being fetched, contiguous in the blob and at most `groupLimit` compressed bytes,
    /// consuming what it looked at; nil when none is left. Readers of claimed chunks wait for
    /// the claimer's fetch instead of starting their own; every run claimed is fetched with
    /// ``fetchClaimed(_:)``, which ends the claims.
    func claimRun(_ chunks: inout ArraySlice<Chunk>, groupLimit: Int64) -> [Chunk]? {
        var run: [Chunk] = []
        while let chunk = chunks.first {
            if let last = run.last, last.compressedEnd != chunk.compressedStart
                || chunk.compressedEnd - run[0].compressedStart > groupLimit {
                break
            }
            chunks.removeFirst()
            // Someone else fetching it ends the run: contiguity is what makes one request.
            guard !cache.isPresent(chunk.index), cache.claim(chunk.index) else {
                if run.isEmpty { continue } else { break }
            }
            run.append(chunk)
        }
        return run.isEmpty ? nil : run
    }

    /// Fetches claimed runs one after another; when one fails, the claims of the ones after
    /// it are ended too and the error is thrown.
    func fetchRuns(_ runs: [[Chunk]]) throws {
        for (i, run) in runs.enumerated() {
            do {
                try fetchClaimed(run)
            } catch {
                cache.release(Set(runs[(i + 1)...].joined().map(\.index)))
                throw error
            }
        }
    }

    /// Fetches a claimed run of chunks with one streamed Range request. Each chunk is
    /// decompressed, verified, stored and released as soon as its last byte arrives, so a
    /// reader waiting for it does not wait for the rest of the run, and only about a chunk's
    /// worth of compressed bytes is held at a time, in one buffer allocated once (a growing
    /// or shifting array left the allocator holding 10 MiB more after a background fetch).
    /// Every claim of the run is ended, whatever happens; chunks not stored are left for
    /// their readers to fetch.
    func fetchClaimed(_ run: [Chunk]) throws {
        guard !run.isEmpty else { return }
        var next = 0                 // the first chunk of the run not stored yet
        var received: Int64 = 0
        defer {
            cache.release(Set(run[next...].map(\.index)))
            activity.withLock { $0.fetchedBytes += received; $0.fetchRequests += 1 }
        }
        // Compressed bytes from run[next].compressedStart on: room for the largest chunk.
        let capacity = Int(run.map { $0.compressedEnd - $0.compressedStart }.max() ?? 0)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        do {
            try fetchRun(run, capacity: capacity, buffer: buffer, next: &next, received: &received)
        } catch {
            // Readers of the chunks not stored fail at once with this, not after a fetch of
            // their own (``LayerDataCache/recordFailure(_:_:)``).
            cache.recordFailure(run[next...].map(\.index), error)
            throw error
        }
    }

    /// The streaming part of ``fetchClaimed(_:)``: one Range request for `run`, each chunk
    /// stored as soon as its bytes are in; `next` is the first chunk not stored yet.
    private func fetchRun(_ run: [Chunk], capacity: Int, buffer: UnsafeMutableRawBufferPointer,
                          next: inout Int, received: inout Int64) throws {
        guard let first = run.first, let last = run.last else { return }
        var filled = 0
        try fetch(first.compressedStart, last.compressedEnd - first.compressedStart) { bytes in
            received += Int64(bytes.count)
            var input = bytes[...]
            while !input.isEmpty && next < run.count {
                let n = min(input.count, capacity - filled)
                UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<(filled + n)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: input.prefix(n)))
                filled += n
                input = input.dropFirst(n)
                var used = 0
                while next < run.count {
                    let chunk = run[next]
                    let size = Int(chunk.compressedEnd - chunk.compressedStart)
                    guard filled - used >= size else { break }
                    let compressed = [UInt8](UnsafeRawBufferPointer(rebasing: buffer[used..<(used + size)]))
                    try cache.store(try decode(chunk, from: compressed), for: chunk)
                    cache.release([chunk.index])
                    used += size
                    next += 1
                }
                if used > 0 {
                    if filled > used { memmove(buffer.baseAddress!, buffer.baseAddress! + used, filled - used) }
                    filled -= used
                }
            }
        }
    }
}
