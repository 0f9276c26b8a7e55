import Foundation
import LazyPullContent
import LazyPullImages
import LazyPullLayers
import LazyPullOCI
import LazyPullRegistry
import LazyPullSnapshots
import Synchronization

/// One entry of the mount list a snapshotter returns (containerd `types.Mount`).
public struct SnapshotMount: Sendable, Equatable {
    public var type: String
    public var source: String
    public var options: [String]
}

/// A snapshot as containerd sees it (`snapshots.Info`).
public struct SnapshotInfo: Sendable, Equatable {
    public var name: String
    public var parent: String?
    public var kind: SnapshotKind
    public var created: Date
    public var updated: Date
    public var labels: [String: String]

    /// What an Update carries: the name, and the labels to set.
    public init(name: String, labels: [String: String]) {
        self.name = name
        parent = nil
        kind = .committed
        created = Date()
        updated = created
        self.labels = labels
    }

    init(_ record: SnapshotRecord) {
        name = record.key
        parent = record.parent
        kind = record.kind
        created = record.created
        updated = record.updated
        labels = record.labels
    }

    var filterFields: SnapshotFilter.Fields {
        SnapshotFilter.Fields(name: name, parent: parent ?? "", kind: kind.rawValue, labels: labels)
    }
}

/// What a Prepare asks for when its labels name a layer in a registry (the remote snapshot
/// handshake of containerd's `docs/remote-snapshotter.md`): CRI's labels or stargz's.
public struct RemoteLayerRequest: Sendable, Equatable {
    /// `containerd.io/snapshot.ref`: the chain ID to commit the layer under.
    public var target: String
    public var reference: String
    public var layer: Digest
    /// Every layer of the image (bottom first), to resolve ahead.
    public var imageLayers: [Digest]

    public static let targetLabel = "containerd.io/snapshot.ref"
    static let sources: [(reference: String, digest: String, layers: String)] = [
        ("containerd.io/snapshot/cri.image-ref", "containerd.io/snapshot/cri.layer-digest", "containerd.io/snapshot/cri.image-layers"),
        ("containerd.io/snapshot/remote/stargz.reference", "containerd.io/snapshot/remote/stargz.digest",
         "containerd.io/snapshot/remote/stargz.layers"),
    ]

    public init?(labels: [String: String]) {
        guard let target = labels[Self.targetLabel], !target.isEmpty else { return nil }
        for source in Self.sources {
            guard let reference = labels[source.reference], let digestText = labels[source.digest],
                  let digest = try? Digest(parsing: digestText) else { continue }
            self.target = target
            self.reference = reference
            self.layer = digest
            self.imageLayers = (labels[source.layers] ?? "").split(separator: ",")
                .compactMap { try? Digest(parsing: String($0)) }
            return
        }
        return nil
    }
}

/// How lazy layers are fetched and cached (`config.toml`'s `[fetch]` and `[cache]`).
public struct FetchSettings: Sendable {
    public var fetchTimeoutSeconds = 30
    public var backgroundFetch = true
    /// Fetch the files before `.prefetch.landmark` at once, waiting up to this long.
    public var prefetch = true
    public var prefetchWaitSeconds = 0
    /// Use plain HTTP for every registry (loopback registries always use it).
    public var plainHTTP = false
    /// Soft limit of the root's layer data cache (0: none): background fetches stop at it, and
    /// the data of layers nothing serves is evicted to get under it.
    public var cacheLimitBytes: Int64 = 0

    public init() {}

    /// Brings the root's layer data cache under `cacheLimitBytes`, from layers nothing uses.
    func evictCache(in state: StateRoot) {
        guard cacheLimitBytes > 0,
              let freed = try? LazyLayers(state: state).evictCache(toFit: cacheLimitBytes), freed > 0 else { return }
        serviceLog("cache over its limit: evicted \(freed) bytes of layers not in use")
    }

    func apply(to options: inout LazyLayerOptions, timeoutAndBackground: Bool) {
        if timeoutAndBackground {
            options.fetchTimeoutSeconds = fetchTimeoutSeconds
            options.backgroundFetch = backgroundFetch
        }
        options.prefetch = prefetch
        options.prefetchWaitSeconds = prefetchWaitSeconds
        options.cacheLimitBytes = cacheLimitBytes
    }
}

/// containerd's snapshotter semantics (`snapshots.Snapshotter`; the service of
/// api/services/snapshots/v1) over lazypull's snapshot store, plus remote snapshots: a
/// Prepare carrying a layer's registry coordinates mounts that layer lazily, commits it
/// under the requested chain ID and answers "already exists". Everything else is an
/// ordinary overlay snapshot that containerd fills itself.
///
/// Keys arrive as `<namespace>/<sequence>/<key>`; remote layers are committed as
/// `remote/<chain ID>`, so none of them can be mistaken for the CLI's snapshots.
public final class ContainerdSnapshotter: Sendable {
    let state: StateRoot
    let host: LayerHostClient
    let settings: FetchSettings
    private let images = Mutex<[String: ResolvedRemoteImage]>([:])
    private let tocs = Mutex<[Digest: Pending<LazyLayers.VerifiedTOC>]>([:])
    /// Blob tails fetched before the manifest is known (``fetchTailsAhead(_:)``).
    private let tails = Mutex<[Digest: Pending<BlobTail>]>([:])
    private let clients = Mutex<[String: RegistryClient]>([:])
    /// Remote layers whose FUSE mount is being set up, by mountpoint.
    private let attaches = Mutex<[String: Pending<Void>]>([:])
    /// Layers the layer host was asked to build ahead (``warmAhead(_:layers:except:)``).
    private let warmed = Mutex<Set<Digest>>([])

    /// Set on a committed remote layer: the blob it reads.
    public static let remoteLayerLabel = "containerd.io/snapshot/lazypull.remote-layer"

    public init(state: StateRoot, host: LayerHostClient, settings: FetchSettings) {
        self.state = state
        self.host = host
        self.settings = settings
    }

    // MARK: Snapshotter

    public func prepare(key: String, parent: String?, labels: [String: String]) throws -> [SnapshotMount] {
        if let remote = RemoteLayerRequest(labels: labels) {
            let existing: SnapshotRecord?
            do {
                existing = try prepareRemote(remote, parent: parent, labels: labels)
            } catch {
                serviceLog("layer \(remote.layer) of \(remote.reference) cannot be mounted lazily (\(error)); containerd unpacks it")
                existing = nil
            }
            if let existing {
                throw LazyPullError(.alreadyExists, "target snapshot \(remote.target) already exists as \(existing.key)")
            }
        }
        return try create(key: key, parent: parent, kind: .active, labels: labels)
    }

    public func view(key: String, parent: String?, labels: [String: String]) throws -> [SnapshotMount] {
        try create(key: key, parent: parent, kind: .view, labels: labels)
    }

    public func mounts(key: String) throws -> [SnapshotMount] {
        let record = try record(key)
        try serveLazyLayers(under: record)
        return try mounts(of: record)
    }

    public func commit(name: String, key: String, labels: [String: String]) throws {
        let record = try record(key)
        guard record.kind == .active else {
            throw LazyPullError(.invalidArgument, "snapshot \(key) is not active")
        }
        try state.snapshots.commit(key: key, as: name, parent: record.parent, labels: labels)
    }

    public func remove(key: String) throws {
        let record = try record(key)
        let lazy = LazyLayers(state: state).spec(of: record) != nil
        try state.snapshots.remove(key)
        // A removed layer frees its cached data; a removed container may leave layers nothing
        // uses, whose data can go if the cache is over its limit. (Busy: Cleanup does it later.)
        guard lazy || settings.cacheLimitBytes > 0,
              let lock = try? FileLock.attempt(path: "\(state.path)/gc.lock", mode: .exclusive) else { return }
        withExtendedLifetime(lock) {
            if lazy { _ = try? LazyLayers(state: state).pruneCache() }
            evictCache()
        }
    }

    /// Brings the layer data cache under its limit, from layers the layer host does not serve.
    func evictCache() { settings.evictCache(in: state) }

    public func stat(key: String) throws -> SnapshotInfo { SnapshotInfo(try record(key)) }

    /// containerd's Update: only labels can change. `fieldPaths` empty replaces them all;
    /// `labels` too; `labels.<key>` sets or deletes one.
    public func update(_ info: SnapshotInfo, fieldPaths: [String]) throws -> SnapshotInfo {
        let record = try record(info.name)
        var labels = record.labels
        if fieldPaths.isEmpty {
            labels = info.labels
        } else {
            for path in fieldPaths {
                if path == "labels" {
                    labels = info.labels
                } else if path.hasPrefix("labels.") {
                    let key = String(path.dropFirst("labels.".count))
                    labels[key] = info.labels[key]
                } else {
                    throw LazyPullError(.invalidArgument, "cannot update field \(path) of snapshot \(info.name)")
                }
            }
        }
        return SnapshotInfo(try state.metadata.setSnapshotLabels(info.name, labels))
    }

    /// containerd's snapshots (those of the CLI are not listed), filtered.
    public func list(filters: [String]) throws -> [SnapshotInfo] {
        let parsed = try filters.filter { !$0.isEmpty }.map(SnapshotFilter.init(parsing:))
        return try state.metadata.snapshots().filter(\.isContainerdOwned).map(SnapshotInfo.init)
            .filter { SnapshotFilter.matchesAny(parsed, $0.filterFields) }
    }

    /// Disk used by the snapshot's own tree: its upper directory, or its unpacked layer.
    /// A lazy layer counts the bytes fetched into its cache.
    public func usage(key: String) throws -> (size: Int64, inodes: Int64) {
        let record = try record(key)
        if let spec = LazyLayers(state: state).spec(of: record) {
            var st = Glibc.stat()
            // The cache files are named by the layer and the digest of the TOC it is served from.
            guard let data = LayerCacheFiles.dataPath(cacheDirectory: spec.cacheDirectory, layer: spec.descriptor.digest,
                                                      tocPath: spec.tocPath) else { return (0, 0) }
            return (lstat(data, &st) == 0 ? Int64(st.st_blocks) * 512 : 0, 0)
        }
        return DiskUsage.measure(state.snapshots.fsPath(of: record))
    }

    /// Removes what no snapshot owns any more: directories without a row, cached layer data.
    public func cleanup() throws {
        let lock = try state.gcLock(.exclusive)
        defer { withExtendedLifetime(lock) {} }
        let known = Set(try state.metadata.snapshots().map { String($0.id) })
        for name in (try? FileManager.default.contentsOfDirectory(atPath: state.snapshots.root)) ?? []
        where name != "locks" && !known.contains(name) {
            umount2("\(state.snapshots.root)/\(name)/fs", Int32(MNT_DETACH))
            try SnapshotStore.removeTree("\(state.snapshots.root)/\(name)")
        }
        try LazyLayers(state: state).pruneCache()
        evictCache()
    }

    /// Serves again every remote layer containerd has, from local state (at start, before
    /// the socket is served: a container may be created on any of them at once).
    public func restore() {
        let layers = LazyLayers(state: state)
        guard let snapshots = try? state.metadata.snapshots() else { return }
        for snapshot in snapshots where snapshot.isContainerdOwned {
            guard let spec = layers.spec(of: snapshot) else { continue }
            do { try host.attach(spec) } catch { serviceLog("cannot serve remote layer \(snapshot.key): \(error)") }
        }
    }

    // MARK: Snapshots and mounts

    private func record(_ key: String) throws -> SnapshotRecord {
        guard let record = try state.metadata.snapshot(key) else {
            throw LazyPullError(.notFound, "snapshot \(key) not found")
        }
        return record
    }

    private func create(key: String, parent: String?, kind: SnapshotKind, labels: [String: String]) throws -> [SnapshotMount] {
        let lock = try state.gcLock(.shared)
        defer { withExtendedLifetime(lock) {} }
        let record = try state.snapshots.prepare(key: key, parent: parent, kind: kind, labels: labels)
        do {
            try serveLazyLayers(under: record)
            return try mounts(of: record)
        } catch {
            try? state.snapshots.remove(key)
            throw error
        }
    }

    /// Makes sure every lazy layer below `record` is served (the layer host may have been
    /// restarted, or the layer detached while nothing stood on it).
    private func serveLazyLayers(under record: SnapshotRecord) throws {
        let layers = LazyLayers(state: state)
        var next = record.parent
        while let key = next, let parent = try state.metadata.snapshot(key) {
            if let spec = layers.spec(of: parent) {
                if let pending = attaches.withLock({ $0[spec.mountpoint] }), (try? pending.wait()) != nil {
                    // Mounted by the remote Prepare that committed it.
                } else {
                    do { try host.attach(spec) } catch {
                        throw LazyPullError(.io, "layer \(spec.descriptor.digest) of \(spec.reference) cannot be served: \(error)")
                    }
                }
            }
            next = parent.parent
        }
    }

    /// The mounts containerd performs itself (as its overlayfs snapshotter would hand out).
    func mounts(of record: SnapshotRecord) throws -> [SnapshotMount] {
        let lowers = try record.parent.map(state.snapshots.lowerDirectories(from:)) ?? []
        let own = state.snapshots.fsPath(of: record)
        switch record.kind {
        case .active:
            guard !lowers.isEmpty else { return [SnapshotMount(type: "bind", source: own, options: ["rbind", "rw"])] }
            let dir = state.snapshots.directory(of: record)
            return [SnapshotMount(type: "overlay", source: "overlay", options: [
                "index=off", "workdir=\(dir)/work", "upperdir=\(own)", "lowerdir=\(lowers.joined(separator: ":"))",
            ])]
        case .view, .committed:
            let all = record.kind == .committed ? [own] + lowers : lowers
            switch all.count {
            case 0: return [SnapshotMount(type: "bind", source: own, options: ["rbind", "ro"])]
            case 1: return [SnapshotMount(type: "bind", source: all[0], options: ["rbind", "ro"])]
            default: return [SnapshotMount(type: "overlay", source: "overlay", options: ["lowerdir=\(all.joined(separator: ":"))"])]
            }
        }
    }

    // MARK: Remote snapshots

    /// Mounts the requested layer lazily and commits it; returns the committed snapshot, or
    /// nil when the layer has no index to read it lazily by.
    private func prepareRemote(_ request: RemoteLayerRequest, parent: String?,
                               labels: [String: String]) throws -> SnapshotRecord? {
        let started = ContinuousClock.now
        let lock = try state.snapshots.lock("remote-\(request.target)")
        defer { withExtendedLifetime(lock) {} }
        if let existing = try committedRemote(target: request.target, parent: parent) {
            guard let spec = LazyLayers(state: state).spec(of: existing) else {
                throw LazyPullError(.notFound, "remote layer \(existing.key) has no lazy layer spec")
            }
            try host.attach(spec)
            return existing
        }
        if labels[Self.estargzTOCLabel] != nil { fetchTailsAhead(request) }
        let cached = try resolve(request.reference)
        let image: ResolvedRemoteImage
        if cached.manifest.layers.contains(where: { $0.digest == request.layer }) {
            image = cached
        } else {
            // The tag may have moved since it was resolved: resolve it again, once.
            images.withLock { $0[request.reference] = nil }
            image = try resolve(request.reference)
        }
        guard let layer = image.manifest.layers.first(where: { $0.digest == request.layer }) else {
            throw LazyPullError(.notFound, "\(request.reference) has no layer \(request.layer)")
        }
        guard LayerTOCReader.format(of: layer) != nil else { return nil }
        let resolved = ContinuousClock.now
        fetchTOCsAhead(of: image, layers: request.imageLayers)
        warmAhead(image, layers: request.imageLayers, except: layer.digest)
        let toc = try tocFetch(for: layer, image: image).wait()
        let tocReady = ContinuousClock.now
        let gcLock = try state.gcLock(.shared)
        defer { withExtendedLifetime(gcLock) {} }
        // The layer is mounted while containerd goes on (its next layer, creating the
        // container); whatever needs the mount waits for it (`serveLazyLayers`). The TOC was
        // verified already: a failure here is rare, and reported when the layer is used.
        var options = LazyLayerOptions(attach: { [self] spec in
            attachInBackground(spec) {
                // The program a container runs by default is fetched as soon as it is served.
                var spec = spec
                spec.prefetchPaths = (try? image.config.wait())?.startupPaths
                return spec
            }
        }, notice: { serviceLog($0) })
        settings.apply(to: &options, timeoutAndBackground: true)
        let chainID = (try? Digest(parsing: request.target)) ?? layer.digest
        let key = try LazyLayers(state: state).prepare(layer, chainID: chainID, reference: image.reference,
                                                       registry: image.registry, registryOptions: image.options,
                                                       options: options, toc: toc)
        var committedLabels = labels.filter { $0.key.hasPrefix("containerd.io/snapshot/") || $0.key == RemoteLayerRequest.targetLabel }
        committedLabels[Self.remoteLayerLabel] = layer.digest.description
        let name = try freeRemoteName(for: request.target)
        do {
            try state.snapshots.commit(key: key, as: name, parent: parent, labels: committedLabels)
        } catch {
            try? state.snapshots.remove(key)
            throw error
        }
        tocs.withLock { $0[layer.digest] = nil }
        serviceLog("remote layer \(layer.digest) of \(request.reference) served as \(name) after \(ContinuousClock.now - started) (image resolved after \(resolved - started), TOC after \(tocReady - started))")
        return try record(name)
    }

    private func attachInBackground(_ spec: LazyLayerSpec, completing complete: @escaping @Sendable () -> LazyLayerSpec) {
        let pending = Pending<Void>()
        attaches.withLock { $0[spec.mountpoint] = pending }
        BlockingThread.run { [self] in
            let outcome = Result { try host.attach(complete()) }
            if case .failure(let error) = outcome { serviceLog("cannot serve remote layer \(spec.descriptor.digest): \(error)") }
            pending.finish(outcome)
            attaches.withLock { if $0[spec.mountpoint] === pending { $0[spec.mountpoint] = nil } }
        }
    }

    private func committedRemote(target: String, parent: String?) throws -> SnapshotRecord? {
        try state.metadata.snapshots().first {
            $0.kind == .committed && $0.isContainerdOwned && $0.labels[RemoteLayerRequest.targetLabel] == target
                && $0.labels[Self.remoteLayerLabel] != nil && $0.parent == parent
        }
    }

    private func freeRemoteName(for target: String) throws -> String {
        let name = "remote/\(target)"
        return try state.metadata.snapshot(name) == nil ? name : "\(name)/\(UUID().uuidString)"
    }

    /// The image's manifest, resolved once per reference while this process runs (again when
    /// a layer asked for is not in it: the tag moved).
    private func resolve(_ text: String) throws -> ResolvedRemoteImage {
        if let cached = images.withLock({ $0[text] }) { return cached }
        let registry = try client(for: text)
        let reference = registry.reference, options = registry.options
        let manifest = try registry.resolve(platform: .host).manifestValue
        let config = Pending.start {
            try JSONDecoder().decode(ImageConfig.self, from: Data(registry.fetchBlob(manifest.config, limit: 8 << 20)))
        }
        let image = ResolvedRemoteImage(reference: reference, registry: registry, options: options, manifest: manifest,
                                        config: config)
        images.withLock { $0[text] = image }
        return image
    }

    /// One client per reference, so that the manifest, the tails and the TOCs share
    /// connections.
    private func client(for text: String) throws -> RegistryClient {
        if let client = clients.withLock({ $0[text] }) { return client }
        var options = RegistryOptions()
        options.plainHTTP = settings.plainHTTP
        let client = RegistryClient(reference: try Reference(parsing: text), options: options)
        return clients.withLock { $0[text, default: client] }
    }

    /// containerd copies a layer's `containerd.io/snapshot/*` annotations into the labels of
    /// its Prepare; this one (eStargz's TOC digest) says the image is eStargz before its
    /// manifest has been fetched.
    static let estargzTOCLabel = "containerd.io/snapshot/stargz/toc.digest"

    /// Starts fetching the end of every layer of the image (footer and TOC) by digest alone,
    /// while the manifest is resolved: the TOC of the first layer containerd asks for is then
    /// one round trip away instead of three. The bytes are trusted only once the manifest
    /// has come and the TOC verifies against its annotation (``tocFetch(for:image:)``).
    private func fetchTailsAhead(_ request: RemoteLayerRequest) {
        guard let registry = try? client(for: request.reference) else { return }
        for digest in [request.layer] + request.imageLayers {
            let fetch: Pending<BlobTail>? = tails.withLock { tails in
                guard tails[digest] == nil, tocs.withLock({ $0[digest] }) == nil else { return nil }
                let fetch = Pending<BlobTail>()
                tails[digest] = fetch
                return fetch
            }
            guard let fetch else { continue }
            fetch.start {
                let (bytes, size) = try registry.fetchTail(digest, length: Self.tailAhead)
                return BlobTail(bytes: bytes, size: size)
            }
        }
    }

    /// Enough for the footer and TOC of most layers (the python image's 57 MB layer has a
    /// 445 KB TOC).
    static let tailAhead: Int64 = 512 << 10

    /// Starts fetching the TOCs of the image's other lazily readable layers, in parallel:
    /// containerd asks for them one by one, bottom first.
    private func fetchTOCsAhead(of image: ResolvedRemoteImage, layers: [Digest]) {
        let wanted = Set(layers)
        for layer in image.manifest.layers where wanted.contains(layer.digest) {
            if LayerTOCReader.format(of: layer) != nil {
                _ = tocFetch(for: layer, image: image)
            } else {
                tails.withLock { _ = $0.removeValue(forKey: layer.digest) }
            }
        }
    }

    /// Has the layer host build the image's other lazily readable layers and start fetching
    /// their startup files (and landmark prefetch) once their TOCs and the config are in,
    /// before containerd prepares those layers: it prepares them one by one, bottom first, and
    /// the program a container runs usually sits in a layer it prepares last. Each layer is
    /// warmed once; best effort (a layer not warmed is built when it is attached).
    private func warmAhead(_ image: ResolvedRemoteImage, layers: [Digest], except current: Digest) {
        let wanted = Set(layers)
        let fresh = warmed.withLock { warmed in
            image.manifest.layers.filter {
                wanted.contains($0.digest) && $0.digest != current && LayerTOCReader.format(of: $0) != nil
                    && warmed.insert($0.digest).inserted
            }
        }
        guard !fresh.isEmpty else { return }
        let fetches = fresh.map { ($0, tocFetch(for: $0, image: image)) }
        BlockingThread.run { [self] in
            var options = LazyLayerOptions(attach: { _ in }, notice: { _ in })
            settings.apply(to: &options, timeoutAndBackground: true)
            options.prefetchPaths = (try? image.config.wait())?.startupPaths ?? []
            let directory = "\(state.path)/tmp"
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            var specs: [LazyLayerSpec] = []
            for (layer, fetch) in fetches {
                guard let toc = try? fetch.wait() else { continue }
                let path = "\(directory)/toc-ahead-\(layer.digest.encoded)-\(UUID().uuidString).json"
                guard (try? Data(toc.json).write(to: URL(fileURLWithPath: path))) != nil else { continue }
                specs.append(LazyLayers(state: state).spec(
                    for: layer, reference: image.reference, registryOptions: image.options, options: options,
                    tocPath: path, dataEnd: toc.dataEnd, mountpoint: ""))
            }
            defer { for spec in specs { try? FileManager.default.removeItem(atPath: spec.tocPath) } }
            guard !specs.isEmpty else { return }
            do { try host.warm(specs) } catch { serviceLog("could not build layers ahead: \(error)") }
        }
    }

    private func tocFetch(for layer: Descriptor, image: ResolvedRemoteImage) -> Pending<LazyLayers.VerifiedTOC> {
        let (fetch, started) = tocs.withLock { tocs -> (Pending<LazyLayers.VerifiedTOC>, Bool) in
            if let existing = tocs[layer.digest], !existing.failed { return (existing, false) }
            let fetch = Pending<LazyLayers.VerifiedTOC>()
            tocs[layer.digest] = fetch
            return (fetch, true)
        }
        if started {
            let registry = image.registry
            let tail = tails.withLock { $0.removeValue(forKey: layer.digest) }
            fetch.start {
                // A tail fetched ahead serves the reads it covers, if it is of this blob's size.
                let ahead = (try? tail?.wait()).flatMap { $0.size == layer.size ? $0 : nil }
                return try LayerTOCReader.fetchVerified(layer) { offset, length in
                    if let bytes = ahead?.bytes(at: offset, length: length) { return bytes }
                    return try registry.fetchRange(layer.digest, offset: offset, length: length)
                }
            }
        }
        return fetch
    }
}

/// The last bytes of a blob and the blob's size.
struct BlobTail: Sendable {
    var bytes: [UInt8]
    var size: Int64

    /// `length` bytes at blob offset `offset`, when the tail holds all of them.
    func bytes(at offset: Int64, length: Int64) -> [UInt8]? {
        let start = size - Int64(bytes.count)
        guard offset >= start, length >= 0, offset + length <= size else { return nil }
        let from = Int(offset - start)
        return Array(bytes[from..<from + Int(length)])
    }
}

/// A resolved image whose layers containerd asks for.
struct ResolvedRemoteImage: Sendable {
    var reference: Reference
    var registry: RegistryClient
    var options: RegistryOptions
    var manifest: Manifest
    /// The image configuration, fetched while the first layer's TOC is.
    var config: Pending<ImageConfig>
}

/// `du`-style usage of a directory tree: allocated bytes and inodes, hard links counted once.
enum DiskUsage {
    static func measure(_ root: String) -> (size: Int64, inodes: Int64) {
        var size: Int64 = 0, inodes: Int64 = 0
        var seen = Set<UInt64>()
        var stack = [root]
        while let path = stack.popLast() {
            var st = stat()
            guard lstat(path, &st) == 0, seen.insert(UInt64(st.st_ino)).inserted else { continue }
            size += Int64(st.st_blocks) * 512
            inodes += 1
            if st.st_mode & S_IFMT == S_IFDIR {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
                    stack.append("\(path)/\(name)")
                }
            }
        }
        return (size, inodes)
    }
}
