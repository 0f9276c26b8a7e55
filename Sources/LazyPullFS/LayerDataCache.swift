import Foundation
import LazyPullLayers
import LazyPullOCI

/// The fetched contents of one lazy layer, as one TOC lays it out, on local disk.
///
/// One sparse file (``LayerCacheFiles``: `<layer hex>.<toc hex>.data`) holds every regular
/// file of the layer at a fixed place, in TOC order, so a file's bytes are contiguous (one
/// `pread` per read) and reading the tree in order reads the cache sequentially. A map beside
/// it (`.map`, one byte per chunk) says which chunks have arrived. Data is written before
/// its map byte; a chunk found in the map by a later process is checked against its digest
/// once before it is served, so a crash or a damaged disk can cost a fetch but never serve
/// wrong bytes. A missing chunk is fetched once however many readers wait for it; a failed
/// fetch is not remembered, so a later read tries again (the mount recovers when the
/// registry does).
final class LayerDataCache: @unchecked Sendable {
    /// Longer than any single fetch may take (its retries are bounded by the fetch timeout).
    static let waitLimit: TimeInterval = 120

    enum ChunkState: UInt8 {
        case missing = 0
        /// In the map from an earlier process: checked against its digest before use.
        case unverified = 1
        case verified = 2
    }

    private let dataFD: Int32
    private let mapFD: Int32
    private let dataPath: String
    private let condition = NSCondition()
    private var states: [ChunkState]
    private var inFlight: Set<Int> = []
    /// Fetch failures of the last moment, by chunk. A read that comes right after one (the
    /// kernel retrying a failed read, a reader that waited for the fetch that failed) fails at
    /// once with the same error instead of starting a fetch of its own, so a read takes at most
    /// one fetch deadline (docs/security.md, rule 7). Older failures are forgotten: the next
    /// read tries again, and the mount recovers when the registry does.
    private var recentFailures: [Int: (at: Date, error: LazyPullError)] = [:]
    static let failureMemory: TimeInterval = 1

    init(directory: String, layer: Digest, toc: Digest, chunkCount: Int, dataSize: Int64) throws {
        let base = "\(directory)/\(layer.algorithm)"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let name = LayerCacheFiles.baseName(layer: layer, toc: toc)
        dataPath = "\(base)/\(name).data"
        let mapPath = "\(base)/\(name).map"
        let data = open(dataPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard data >= 0 else { throw LazyPullError.io("cannot open layer cache", path: dataPath, errno: errno) }
        let mapFile = open(mapPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard mapFile >= 0 else {
            let e = errno
            close(data)
            throw LazyPullError.io("cannot open layer cache map", path: mapPath, errno: e)
        }
        var map = [UInt8](repeating: 0, count: chunkCount)
        let n = map.withUnsafeMutableBytes { Glibc.pread(mapFile, $0.baseAddress, $0.count, 0) }
        if n < chunkCount { _ = ftruncate(mapFile, off_t(chunkCount)) }
        var st = stat()
        if fstat(data, &st) == 0 && st.st_size != dataSize { _ = ftruncate(data, off_t(dataSize)) }
        dataFD = data
        mapFD = mapFile
        states = map.map { $0 == 0 || n <= 0 ? .missing : .unverified }
    }

    deinit {
        close(dataFD)
        close(mapFD)
    }

    /// The data file, open for as long as the cache lives (reads are spliced from it).
    var dataDescriptor: Int32 { dataFD }

    /// Whether every chunk of `chunks` is here and verified: the test every read makes.
    func areVerified(_ chunks: ArraySlice<Chunk>) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return chunks.allSatisfy { states[$0.index] == .verified }
    }

    func isPresent(_ index: Int) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return states[index] != .missing
    }

    /// Whether chunk `index` is neither here nor being fetched.
    func isUnclaimed(_ index: Int) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return states[index] == .missing && !inFlight.contains(index)
    }

    /// Makes sure `chunk` is here and verified, fetching it with `fetch` when it is not.
    func ensure(_ chunk: Chunk, fetch: () throws -> [UInt8]) throws {
        condition.lock()
        // Waiting for another fetch is bounded too: a read never hangs, whatever goes wrong.
        let deadline = Date().addingTimeInterval(Self.waitLimit)
        while inFlight.contains(chunk.index) {
            guard condition.wait(until: deadline) || !inFlight.contains(chunk.index) else {
                condition.unlock()
                throw LazyPullError(.io, "gave up waiting for chunk \(chunk.digest) after \(Int(Self.waitLimit)) s")
            }
        }
        let state = states[chunk.index]
        if state == .verified { condition.unlock(); return }
        if let failure = recentFailure(chunk.index) { condition.unlock(); throw failure }
        inFlight.insert(chunk.index)
        condition.unlock()
        defer { release([chunk.index]) }
        if state == .unverified, (try? verifyStored(chunk)) == true { return }
        do {
            try store(try fetch(), for: chunk)
        } catch {
            recordFailure([chunk.index], error)
            throw error
        }
    }

    /// The failure of a fetch of chunk `index` in the last ``failureMemory`` seconds; the
    /// caller holds the lock.
    private func recentFailure(_ index: Int) -> LazyPullError? {
        guard let failure = recentFailures[index] else { return nil }
        guard Date().timeIntervalSince(failure.at) < Self.failureMemory else {
            recentFailures[index] = nil
            return nil
        }
        return failure.error
    }

    /// Remembers, for a moment, that fetching `indices` failed with `error`.
    func recordFailure(_ indices: some Sequence<Int>, _ error: any Error) {
        let failure = error as? LazyPullError ?? LazyPullError(.io, "\(error)")
        let now = Date()
        condition.lock()
        for index in indices where states[index] != .verified { recentFailures[index] = (now, failure) }
        condition.unlock()
    }

    /// Copies `buffer.count` bytes at `position` of the data file (a file's bytes are contiguous).
    func read(at position: Int64, into buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(dataFD, buffer.baseAddress! + done, buffer.count - done, off_t(position) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw LazyPullError.io("cannot read layer cache", path: dataPath, errno: n < 0 ? errno : EIO) }
            done += n
        }
    }

    /// Calls `body` with `count` bytes at `position` of the data file, mapped, not copied.
    func withMappedBytes<R>(at position: Int64, count: Int, _ body: (UnsafeRawBufferPointer) -> R?) -> R? {
        let page = Int64(max(4096, sysconf(Int32(_SC_PAGESIZE))))
        guard position >= 0, count > 0 else { return nil }
        let aligned = position / page * page
        let lead = Int(position - aligned)
        // Past the data file's end a mapping would fault (SIGBUS) when touched.
        var st = stat()
        let (length, overflow) = lead.addingReportingOverflow(count)
        let (end, endOverflow) = position.addingReportingOverflow(Int64(count))
        guard !overflow, !endOverflow, fstat(dataFD, &st) == 0, end <= Int64(st.st_size),
              let base = mmap(nil, length, PROT_READ, MAP_SHARED, dataFD, off_t(aligned)),
              base != MAP_FAILED else { return nil }
        defer { munmap(base, length) }
        return body(UnsafeRawBufferPointer(start: base + lead, count: count))
    }

    /// Marks a chunk as being fetched by the caller; false when it is verified or someone
    /// else is fetching it. Every successful claim is ended with ``release(_:)``.
    func claim(_ index: Int) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !inFlight.contains(index), states[index] != .verified, recentFailure(index) == nil else { return false }
        inFlight.insert(index)
        return true
    }

    func release(_ indices: Set<Int>) {
        condition.lock()
        inFlight.subtract(indices)
        condition.broadcast()
        condition.unlock()
    }

    /// Writes a verified chunk's bytes, then its map byte.
    func store(_ bytes: [UInt8], for chunk: Chunk) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.pwrite(dataFD, $0.baseAddress! + done, $0.count - done, off_t(chunk.dataOffset) + off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw LazyPullError.io("cannot write layer cache", path: dataPath, errno: errno) }
            done += n
        }
        var one = ChunkState.unverified.rawValue
        _ = Glibc.pwrite(mapFD, &one, 1, off_t(chunk.index))
        condition.lock()
        states[chunk.index] = .verified
        condition.unlock()
    }

    /// Checks a chunk left by an earlier process against its digest.
    private func verifyStored(_ chunk: Chunk) throws -> Bool {
        var bytes = [UInt8](repeating: 0, count: Int(chunk.size))
        try bytes.withUnsafeMutableBytes { try read(at: chunk.dataOffset, into: $0) }
        guard Digest.sha256(of: bytes) == chunk.digest else { return false }
        condition.lock()
        states[chunk.index] = .verified
        condition.unlock()
        return true
    }
}
