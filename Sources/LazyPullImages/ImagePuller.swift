import Foundation
import LazyPullContent
import LazyPullLayers
import LazyPullOCI
import LazyPullRegistry
import LazyPullSnapshots
import Synchronization

/// Options of one pull.
public struct PullOptions: Sendable {
    public var platform = Platform.host
    public var registry = RegistryOptions()
    /// Layers downloaded and unpacked at the same time.
    public var parallelLayers = 4
    public var showProgress = false

    public init() {}
}

/// The eager pipeline: resolve, fetch manifest and config into the content store, then
/// for every layer in parallel download → verify → decompress → unpack into its own
/// snapshot (overlay lower format), checking each uncompressed stream against the
/// config's `rootfs.diff_ids`. Snapshots are committed bottom-up under their chain IDs.
public final class ImagePuller: Sendable {
    let state: StateRoot

    public init(state: StateRoot) { self.state = state }

    /// Pulls `reference`. With `lazy`, layers that have an eStargz or zstd:chunked index become
    /// lazily read FUSE snapshots and only the others are downloaded (a notice says which).
    public func pull(_ reference: Reference, options: PullOptions, lazy: LazyLayerOptions? = nil) throws -> ImageRecord {
        let gcLock = try state.gcLock(.shared)
        defer { withExtendedLifetime(gcLock) {} }
        let registry = RegistryClient(reference: reference, options: options.registry)
        // A TOC is fetched within the lazy reads' deadline: a registry that hangs or drips
        // fails the mount in bounded time instead of holding it (docs/security.md, rule 7).
        let tocRegistry = lazy.map { lazy in
            var tocOptions = options.registry
            tocOptions.limitFetches(to: .seconds(max(1, lazy.fetchTimeoutSeconds)))
            return RegistryClient(reference: reference, options: tocOptions)
        }
        // A lazy pull fetches the layers' TOCs while the config comes: a round trip less.
        var tocsAhead: [Int: Pending<LazyLayers.VerifiedTOC>] = [:]
        let image = try StoredImage.fetch(reference, registry: registry, platform: options.platform,
                                          into: state.content) { manifest in
            guard let tocRegistry else { return }
            for (i, layer) in manifest.layers.enumerated() where LayerTOCReader.format(of: layer) != nil {
                tocsAhead[i] = Pending.start {
                    try LayerTOCReader.fetchVerified(layer) { try tocRegistry.fetchRange(layer.digest, offset: $0, length: $1) }
                }
            }
        }
        let manifest = image.manifest
        let config = image.config
        let chainIDs = image.chainIDs
        // The program a container runs by default is fetched as soon as its layer is served.
        let lazy = lazy.map { options -> LazyLayerOptions in
            var options = options
            options.prefetchPaths = config.startupPaths
            return options
        }
        let tocs = tocsAhead
        let layers = try manifest.layers.enumerated().map { i, descriptor in
            LayerJob(index: i, descriptor: descriptor, compression: try LayerCompression(mediaType: descriptor.mediaType),
                     diffID: config.rootfs.diffIDs[i], chainID: chainIDs[i])
        }

        let progress = PullProgress(enabled: options.showProgress)
        let slots = layers.map { progress.addLayer(name: String($0.descriptor.digest.encoded.prefix(12)), total: $0.descriptor.size) }
        progress.run()
        defer { progress.stop() }

        // Download and unpack in parallel, bounded.
        let results = Mutex<[Int: Result<String?, Error>]>([:])
        let group = DispatchGroup()
        let limiter = DispatchSemaphore(value: max(1, options.parallelLayers))
        for layer in layers {
            group.enter()
            limiter.wait()
            let thread = Thread { [self] in
                defer { limiter.signal(); group.leave() }
                let outcome = Result {
                    try self.unpackLayer(layer, reference: reference, registry: registry, options: options, lazy: lazy,
                                         tocAhead: tocs[layer.index], progress: progress, slot: slots[layer.index])
                }
                results.withLock { $0[layer.index] = outcome }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        let outcomes = results.withLock { $0 }

        // Commit bottom-up; on any failure throw every extraction away.
        var firstError: Error?
        for layer in layers {
            if case .failure(let e) = outcomes[layer.index]!, firstError == nil { firstError = e }
        }
        if let firstError {
            for case .success(let key?) in outcomes.values { discard(key) }
            throw firstError
        }
        var unpackedAny = false
        for layer in layers {
            guard case .success(let extractKey) = outcomes[layer.index]!, let key = extractKey else { continue }
            // Unpacked files are made durable below, all at once; a lazy layer's two files
            // were synced as they were written (LazyLayers.write).
            if key.hasPrefix(Self.extractKeyPrefix) { unpackedAny = true }
            let lock = try state.snapshots.lock(layer.chainID.description)
            defer { withExtendedLifetime(lock) {} }
            if try state.metadata.snapshot(layer.chainID.description) != nil {
                try? state.snapshots.remove(key)   // another process committed it first
                continue
            }
            try state.snapshots.commit(key: key, as: layer.chainID.description,
                                       parent: layer.index == 0 ? nil : chainIDs[layer.index - 1].description)
        }
        if unpackedAny { state.sync() }

        let record = image.record(platform: options.platform, keepingLayers: lazy == nil)
        try state.metadata.putImage(record)
        return record
    }

    /// The image as already pulled for `platform`, when every one of its layer snapshots is
    /// there (`docker run` uses a present image as it is).
    public func localImage(_ reference: Reference, platform: Platform) throws -> ImageRecord? {
        guard let local = try state.metadata.image(named: reference.description),
              let localPlatform = try? Platform(parsing: local.platform),
              PlatformMatcher(platform).rank(localPlatform) != nil,
              try local.chainIDs.allSatisfy({ try state.metadata.snapshot($0.description) != nil }) else { return nil }
        return local
    }

    struct LayerJob: Sendable {
        var index: Int
        var descriptor: Descriptor
        var compression: LayerCompression
        var diffID: Digest
        var chainID: Digest
    }

    /// Makes one layer's snapshot: lazily read when `lazy` is set and the layer allows it,
    /// otherwise downloaded (or read from the content store) and unpacked. Returns the new
    /// uncommitted snapshot's key, or nil when the layer's snapshot already exists.
    /// Keys of snapshots a layer is unpacked into (lazy ones start with `lazy-`).
    static let extractKeyPrefix = "extract-"

    func unpackLayer(_ layer: LayerJob, reference: Reference, registry: RegistryClient, options: PullOptions,
                     lazy: LazyLayerOptions?, tocAhead: Pending<LazyLayers.VerifiedTOC>? = nil,
                     progress: PullProgress, slot: Int) throws -> String? {
        if let existing = try state.metadata.snapshot(layer.chainID.description) {
            try LazyLayers(state: state).checkBinding(of: existing, to: layer.descriptor, chainID: layer.chainID)
            progress.set(slot, state: "exists", done: layer.descriptor.size)
            return nil
        }
        if let lazy {
            let digest = layer.descriptor.digest
            if LayerTOCReader.format(of: layer.descriptor) == nil {
                lazy.notice("layer \(digest) (\(layer.descriptor.mediaType)) cannot be read lazily: it has no eStargz or zstd:chunked index; pulling it")
            } else {
                do {
                    let key = try LazyLayers(state: state).prepare(
                        layer.descriptor, chainID: layer.chainID, reference: reference, registry: registry,
                        registryOptions: options.registry, options: lazy, toc: try tocAhead?.wait())
                    progress.set(slot, state: "lazy", done: 0)
                    return key
                } catch let error as LazyPullError where error.code == .transport {
                    // The registry did not answer in time: an eager pull would not either.
                    throw LazyPullError(.transport, "layer \(digest): \(error.message)")
                } catch {
                    lazy.notice("layer \(digest) cannot be read lazily (\(error)); pulling it")
                }
            }
        }
        let key = "\(Self.extractKeyPrefix)\(layer.chainID.encoded.prefix(16))-\(UUID().uuidString)"
        let snapshot = try state.snapshots.prepare(key: key, parent: nil)
        do {
            try download(layer, into: state.snapshots.fsPath(of: snapshot), registry: registry, progress: progress, slot: slot)
            progress.set(slot, state: "done", done: layer.descriptor.size)
            return key
        } catch {
            progress.set(slot, state: "failed")
            discard(key)
            throw error
        }
    }

    /// Throws an uncommitted snapshot away. An unpacked one loses its files first: after a
    /// pull that filled the disk, that frees the room the metadata update needs, so no
    /// half-made `extract-…` snapshot stays behind.
    func discard(_ key: String) {
        if key.hasPrefix(Self.extractKeyPrefix), let snapshot = try? state.metadata.snapshot(key) {
            try? SnapshotStore.removeTree(state.snapshots.directory(of: snapshot))
        }
        try? state.snapshots.remove(key)
    }

    /// The download thread feeds a pipe; an unpack thread decompresses, hashes and unpacks.
    private func download(_ layer: LayerJob, into directory: String, registry: RegistryClient,
                          progress: PullProgress, slot: Int) throws {
        let digest = layer.descriptor.digest
        let pipe = BytePipe()
        let unpackResult = Mutex<Result<Void, Error>?>(nil)
        let unpackDone = DispatchSemaphore(value: 0)
        let unpacker = Thread {
            var decoder: ThreadedSource?
            let outcome = Result {
                // Decompression and hashing run on their own thread, file writes on this one.
                let hashed = HashingSource(try Decompression.source(pipe, compression: layer.compression))
                let decoded = ThreadedSource(hashed)
                decoder = decoded
                let unpacker = try LayerUnpacker(directory: directory)
                try unpacker.unpack(TarReader(decoded))
                try decoded.drain()
                try layer.diffID.verify(hashed.digest(), what: "uncompressed layer \(digest) (config diff_id)")
            }
            if case .failure(let e) = outcome {
                decoder?.fail(e)
                pipe.fail(e)
            }
            unpackResult.withLock { $0 = outcome }
            unpackDone.signal()
        }
        unpacker.stackSize = 1 << 20
        unpacker.start()

        let fetch = Result {
            if state.content.contains(digest) {
                try replayStoredBlob(digest, into: pipe, progress: progress, slot: slot)
                return
            }
            let ingest = try state.content.ingest(digest, size: layer.descriptor.size)
            if ingest.alreadyCommitted {
                // Another process finished this blob while we waited for its ingest lock.
                try replayStoredBlob(digest, into: pipe, progress: progress, slot: slot)
                return
            }
            progress.set(slot, state: ingest.offset > 0 ? "resuming" : "downloading", done: ingest.offset)
            try ingest.replay { try pipe.write($0) }
            if ingest.offset < layer.descriptor.size {
                try registry.streamBlob(digest, from: ingest.offset) { chunk in
                    try ingest.append(chunk)
                    try pipe.write(chunk)
                    progress.advance(slot, by: chunk.count)
                }
            }
            try ingest.commit()
            progress.set(slot, state: "unpacking")
        }
        switch fetch {
        case .success: pipe.finish()
        case .failure(let e): pipe.fail(e)
        }
        unpackDone.wait()
        let unpacked = unpackResult.withLock { $0 }!
        // The download's own error explains more than the pipe failure it caused downstream.
        try fetch.get()
        try unpacked.get()
        try? state.metadata.putContent(digest, size: layer.descriptor.size)
    }

    /// Feeds a committed blob to the unpacker, checking it again on the way.
    private func replayStoredBlob(_ digest: Digest, into pipe: BytePipe, progress: PullProgress, slot: Int) throws {
        progress.set(slot, state: "unpacking", done: 0)
        let path = state.content.path(of: digest)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LazyPullError.io("cannot open", path: path, errno: errno) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let hasher = SHA256Hasher()
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard n >= 0 else { throw LazyPullError.io("cannot read", path: path, errno: errno) }
            if n == 0 { break }
            try buffer.withUnsafeBytes { raw in
                let chunk = UnsafeRawBufferPointer(rebasing: raw[..<n])
                hasher.update(chunk)
                try pipe.write(chunk)
            }
            progress.advance(slot, by: n)
        }
        try digest.verify(hasher.finalize(), what: "stored layer blob")
    }
}
