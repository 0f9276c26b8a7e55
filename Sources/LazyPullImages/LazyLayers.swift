import Foundation
import LazyPullContent
import LazyPullFS
import LazyPullLayers
import LazyPullOCI
import LazyPullRegistry
import LazyPullSnapshots

/// Everything needed to serve one lazily read layer, persisted as `lazy.json` in its snapshot
/// directory next to the verified TOC (`toc.json`), so the layer can be served again after a
/// restart without asking the registry for anything but chunks not yet cached.
public struct LazyLayerSpec: Codable, Sendable, Equatable {
    public var reference: String
    public var descriptor: Descriptor
    /// The snapshot's `fs` directory, where the layer's FUSE filesystem is mounted.
    public var mountpoint: String
    public var tocPath: String
    /// Where the layer's file data ends in the blob (the TOC follows).
    public var dataEnd: Int64
    public var plainHTTP: Bool
    public var insecure: Bool
    /// Verified chunks, shared by every lazy layer of the root.
    public var cacheDirectory: String
    /// A read of content that cannot be fetched fails with EIO after about this long.
    public var fetchTimeoutSeconds: Int
    /// Fetch every chunk in the background after the prefetch.
    public var backgroundFetch: Bool
    /// Fetch the files before `.prefetch.landmark` at once (nil: yes).
    public var prefetch: Bool?
    /// How long an attach waits for that prefetch (nil: not at all).
    public var prefetchWaitSeconds: Int?
    /// The background fetch stops while the root's layer data cache holds more than this
    /// (nil or 0: no limit).
    public var cacheLimitBytes: Int64?
    /// Files fetched as soon as the layer is served, in whichever layer of the image holds
    /// them: the image's default program (its ELF dependencies follow).
    public var prefetchPaths: [String]?

    public var format: LazyLayerFormat { LayerTOCReader.format(of: descriptor) ?? .estargz }
}

/// What `lazypull status` shows of one served lazy layer.
public struct LazyLayerStatus: Codable, Sendable {
    public var digest: Digest
    public var format: LazyLayerFormat
    public var mountpoint: String
    public var progress: LayerProgress

    public init(digest: Digest, format: LazyLayerFormat, mountpoint: String, progress: LayerProgress) {
        self.digest = digest
        self.format = format
        self.mountpoint = mountpoint
        self.progress = progress
    }
}

/// How a pull treats layers that have an eStargz or zstd:chunked index: their snapshot
/// becomes a FUSE mount served by the layer host instead of an unpacked tree.
public struct LazyLayerOptions: Sendable {
    public var fetchTimeoutSeconds = 30
    public var backgroundFetch = true
    public var prefetch = true
    public var prefetchWaitSeconds = 0
    public var cacheLimitBytes: Int64 = 0
    /// See ``LazyLayerSpec/prefetchPaths``.
    public var prefetchPaths: [String] = []
    /// Mounts the layer (the layer host's `attach`); returns once it can be read.
    public var attach: @Sendable (LazyLayerSpec) throws -> Void
    /// One line for the user, e.g. why a layer is pulled eagerly after all.
    public var notice: @Sendable (String) -> Void

    public init(attach: @escaping @Sendable (LazyLayerSpec) throws -> Void, notice: @escaping @Sendable (String) -> Void) {
        self.attach = attach
        self.notice = notice
    }
}

/// Lazy layers among a root's snapshots: which exist, which must be served, and detaching
/// the rest.
public struct LazyLayers: Sendable {
    let state: StateRoot

    public init(state: StateRoot) { self.state = state }

    static let specFile = "lazy.json"

    /// The spec of a lazy layer's snapshot, nil for ordinary snapshots.
    public func spec(of snapshot: SnapshotRecord) -> LazyLayerSpec? {
        let path = "\(state.snapshots.directory(of: snapshot))/\(Self.specFile)"
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(LazyLayerSpec.self, from: data)
    }

    /// Whether `snapshot`, found under `chainID`, may serve `layer`. An unpacked snapshot was
    /// checked against its diff_id, so any image naming that diff_id may share it. A lazy one
    /// was not (its diff_id is only the image's word), and holds what its own blob and TOC
    /// said: it serves only a layer with the same blob digest and TOC annotation. Otherwise an
    /// image that claims another image's diff_ids would have its TOC serve that image's
    /// mounts, or read that image's layer as its own.
    public func checkBinding(of snapshot: SnapshotRecord, to layer: Descriptor, chainID: Digest) throws {
        guard let spec = spec(of: snapshot) else { return }
        let held = (spec.descriptor.digest, LayerTOCReader.tocAnnotation(of: spec.descriptor))
        let wanted = (layer.digest, LayerTOCReader.tocAnnotation(of: layer))
        guard held.0 == wanted.0, held.1 == wanted.1 else {
            throw LazyPullError(.hostileLayer,
                                "layer snapshot \(chainID) is a lazy read of blob \(held.0) with TOC \(held.1 ?? "none"), not of blob \(wanted.0) with TOC \(wanted.1 ?? "none"): two images claim the same diff_ids for different layers; remove the other image first")
        }
    }

    func write(_ spec: LazyLayerSpec, for snapshot: SnapshotRecord) throws {
        let directory = state.snapshots.directory(of: snapshot)
        try JSONEncoder().encode(spec).write(to: URL(fileURLWithPath: "\(directory)/\(Self.specFile)"), options: .atomic)
        // The atomic write synced the file; this makes its name (and toc.json's) durable too.
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }

    /// Lazy layers that some active snapshot or view (a mount, a container) stands on: they
    /// must be served. Keyed by snapshot key.
    public func needed() throws -> [String: LazyLayerSpec] {
        let all = try state.metadata.snapshots()
        let byKey = Dictionary(uniqueKeysWithValues: all.map { ($0.key, $0) })
        var needed: [String: LazyLayerSpec] = [:]
        for snapshot in all where snapshot.kind != .committed {
            var next = snapshot.parent
            while let key = next, let parent = byKey[key] {
                if needed[key] == nil, let spec = spec(of: parent) { needed[key] = spec }
                next = parent.parent
            }
        }
        return needed
    }

    /// Every lazy layer's spec, keyed by snapshot key.
    public func all() throws -> [String: LazyLayerSpec] {
        var specs: [String: LazyLayerSpec] = [:]
        for snapshot in try state.metadata.snapshots() {
            if let spec = spec(of: snapshot) { specs[snapshot.key] = spec }
        }
        return specs
    }

    /// Unmounts the FUSE filesystems of lazy layers nothing stands on any more (the layer
    /// host notices and lets them go). Their TOC and cached chunks stay for the next mount.
    public func detachUnneeded() throws {
        let needed = Set(try needed().keys)
        // Uncommitted lazy layers belong to a pull in progress; containerd's stay served
        // while the control plane runs (containerd may stack a container on them any time).
        for snapshot in try state.metadata.snapshots()
        where snapshot.kind == .committed && !snapshot.isContainerdOwned && !needed.contains(snapshot.key) {
            if let spec = spec(of: snapshot) { umount2(spec.mountpoint, Int32(MNT_DETACH)) }
        }
    }

    /// A layer's TOC, fetched and checked against its descriptor's annotations.
    public typealias VerifiedTOC = (format: LazyLayerFormat, json: [UInt8], dataEnd: Int64)

    /// Fetches and verifies a layer's TOC (unless `toc` is given, fetched ahead) and prepares
    /// its snapshot: `toc.json`, `lazy.json`, and the FUSE mount (through `options.attach`).
    /// Returns the uncommitted snapshot's key.
    public func prepare(_ layer: Descriptor, chainID: Digest, reference: Reference, registry: RegistryClient,
                        registryOptions: RegistryOptions, options: LazyLayerOptions,
                        toc: VerifiedTOC? = nil) throws -> String {
        let located = try toc ?? LayerTOCReader.fetchVerified(layer) { try registry.fetchRange(layer.digest, offset: $0, length: $1) }
        let key = "lazy-\(chainID.encoded.prefix(16))-\(UUID().uuidString)"
        let snapshot = try state.snapshots.prepare(key: key, parent: nil)
        do {
            let directory = state.snapshots.directory(of: snapshot)
            let tocPath = "\(directory)/toc.json"
            try Data(located.json).write(to: URL(fileURLWithPath: tocPath))
            let spec = spec(for: layer, reference: reference, registryOptions: registryOptions, options: options,
                            tocPath: tocPath, dataEnd: located.dataEnd, mountpoint: state.snapshots.fsPath(of: snapshot))
            try write(spec, for: snapshot)
            try options.attach(spec)
            return key
        } catch {
            try? state.snapshots.remove(key)
            throw error
        }
    }

    /// How to serve `layer` of `reference` from the TOC at `tocPath`, at `mountpoint`, with
    /// `options`; its cached contents go to the root's shared layer cache.
    public func spec(for layer: Descriptor, reference: Reference, registryOptions: RegistryOptions,
                     options: LazyLayerOptions, tocPath: String, dataEnd: Int64, mountpoint: String) -> LazyLayerSpec {
        LazyLayerSpec(reference: reference.description, descriptor: layer, mountpoint: mountpoint, tocPath: tocPath,
                      dataEnd: dataEnd, plainHTTP: registryOptions.plainHTTP,
                      insecure: registryOptions.http.insecureSkipVerify, cacheDirectory: "\(state.path)/cache",
                      fetchTimeoutSeconds: options.fetchTimeoutSeconds, backgroundFetch: options.backgroundFetch,
                      prefetch: options.prefetch, prefetchWaitSeconds: options.prefetchWaitSeconds,
                      cacheLimitBytes: options.cacheLimitBytes,
                      prefetchPaths: options.prefetchPaths.isEmpty ? nil : options.prefetchPaths)
    }

    /// Blob digests of every lazy layer: whose cached contents (`cache/sha256/<hex>.<toc
    /// hex>.data` and `.map`, ``LayerCacheFiles``) must stay.
    public func liveLayers() throws -> Set<Digest> {
        Set(try all().values.map(\.descriptor.digest))
    }

    /// Bytes on disk of every layer's cached contents under the root.
    public static func cacheUsage(_ cacheDirectory: String) -> Int64 {
        let dir = "\(cacheDirectory)/sha256"
        var total: Int64 = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            var st = stat()
            if lstat("\(dir)/\(name)", &st) == 0 { total += Int64(st.st_blocks) * 512 }
        }
        return total
    }

    /// Deletes the cached contents of lazy layers nothing stands on (no mount, no container),
    /// least recently written first, until the cache fits in `limit` bytes. Those layers are
    /// detached first; they are attached again, and refetched, when something needs them.
    /// Returns the bytes freed.
    @discardableResult
    public func evictCache(toFit limit: Int64) throws -> Int64 {
        let cache = "\(state.path)/cache"
        var usage = Self.cacheUsage(cache)
        guard limit > 0, usage > limit else { return 0 }
        let inUse = Set(try needed().values.map(\.descriptor.digest.encoded))
        var mountpoints: [String: [String]] = [:]
        for spec in try all().values { mountpoints[spec.descriptor.digest.encoded, default: []].append(spec.mountpoint) }
        let dir = "\(cache)/sha256"
        // Cache files are `<layer hex>.<toc hex>.data` and `.map` (LayerCacheFiles): a layer
        // in use keeps the files of every TOC it is served from.
        var candidates: [(base: String, layer: String, modified: Int, bytes: Int64)] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasSuffix(".data") {
            let base = String(name.dropLast(".data".count))
            let layer = LayerCacheFiles.layerHex(ofFile: name)
            guard !inUse.contains(layer) else { continue }
            var st = stat()
            guard lstat("\(dir)/\(name)", &st) == 0 else { continue }
            candidates.append((base, layer, st.st_mtim.tv_sec, Int64(st.st_blocks) * 512))
        }
        var freed: Int64 = 0
        for candidate in candidates.sorted(by: { $0.modified < $1.modified }) where usage > limit {
            for mountpoint in mountpoints[candidate.layer] ?? [] { umount2(mountpoint, Int32(MNT_DETACH)) }
            // The map goes first: without it the data is never trusted again.
            unlink("\(dir)/\(candidate.base).map")
            unlink("\(dir)/\(candidate.base).data")
            usage -= candidate.bytes
            freed += candidate.bytes
        }
        return freed
    }

    /// Deletes the cached contents of layers no lazy snapshot reads any more; returns the
    /// bytes freed. The caller holds the root's GC lock exclusively (no pull adds a layer).
    @discardableResult
    public func pruneCache() throws -> Int64 {
        let live = Set(try liveLayers().map(\.encoded))
        let cache = "\(state.path)/cache/sha256"
        var freed: Int64 = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []
        where !live.contains(String(name.prefix { $0 != "." })) {
            let path = "\(cache)/\(name)"
            var st = stat()
            if lstat(path, &st) == 0 { freed += Int64(st.st_blocks) * 512 }
            try? FileManager.default.removeItem(atPath: path)
        }
        return freed
    }
}
