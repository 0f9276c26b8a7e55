import CLazyPullShims
import Foundation
import LazyPullContent
import LazyPullFS
import LazyPullFUSE
import LazyPullImages
import LazyPullLayers
import LazyPullOCI
import LazyPullRegistry
import Synchronization

/// The layer host (DESIGN §2a): one long-lived process serving the FUSE filesystems of every
/// lazy layer of a state root, so the control plane can restart without breaking a mount
/// (libfuse cannot hand a live session to another process). It holds no state of its own: the
/// control plane attaches layers from their persisted specs; a layer whose mount goes away
/// (unmounted by anyone) is dropped.
public final class LayerHost: Sendable {
    struct Served: Sendable {
        var spec: LazyLayerSpec
        var server: FUSEServer
        var fileSystem: LayerFileSystem
    }

    private let served = Mutex<[String: Served]>([:])
    /// Layers built ahead of their attach (``warm(_:)``), by blob digest and cache directory:
    /// their trees are built and their startup files on the way before containerd asks to
    /// mount them. An attach of the layer takes its entry; unclaimed ones expire.
    private let warmed = Mutex<[String: Warming]>([:])
    enum Warming: Sendable {
        /// Being built, by a warm or by an attach: no one else builds it meanwhile (two file
        /// systems of one layer would each fetch the same files).
        case building
        case built(spec: LazyLayerSpec, fileSystem: LayerFileSystem, since: ContinuousClock.Instant)
    }
    /// A warmed layer nothing attached for this long is dropped.
    static let warmExpiry: Duration = .seconds(120)
    /// Merged views of several served layers (CLI mounts), by mountpoint.
    private let merged = Mutex<[String: FUSEServer]>([:])
    /// One registry client per reference and transport settings, so tokens and connections
    /// are shared by that image's layers.
    private let clients = Mutex<[String: RegistryClient]>([:])
    /// On-demand reads of every served layer: background fetches (of any layer) yield to them,
    /// since all share the link to the registry (a container reads from one layer while
    /// another's background fetch would fill the link).
    private let reads = ReadActivity()
    /// Attaches mount one at a time (two attaches of one layer must not both mount it).
    private let attaching = Mutex<Void>(())
    /// How long an attach waits for the layer's prefetch before answering.
    static let prefetchWait: TimeInterval = 0
    /// A host that serves nothing and hears nothing for this long ends.
    static let idleExit: Duration = .seconds(60)
    /// When the last request arrived.
    private let activity = Mutex(ContinuousClock.now)

    public init() {}

    /// Serves `paths.hostSocket` until shut down. Returns at once (status 0) when another
    /// host already serves this root.
    public static func run(paths: ServicePaths) throws -> Never {
        try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true)
        guard let lock = try FileLock.attempt(path: paths.hostLock, mode: .exclusive) else { exit(0) }
        // Every served layer holds descriptors (FUSE session, data file, connections).
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            limit.rlim_cur = min(limit.rlim_max, 1 << 20)
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        // Whole-file fetches are large, short-lived buffers: give their memory back after a
        // burst, and keep the arenas of many threads few.
        // (The threshold stays above libfuse's 1 MiB request buffers: mapping and faulting
        // those in again and again halved the speed of reads served from the cache.)
        lp_tune_malloc(2, 4 << 20, 8 << 20)
        let host = LayerHost()
        let listener = try JSONLineListener(path: paths.hostSocket)
        // With nothing to serve for a while, end (the control plane starts a host again when
        // it needs one); serving layers, never.
        let idleWatch = Thread {
            while true {
                Thread.sleep(forTimeInterval: 5)
                host.dropExpiredWarmLayers()
                let idle = host.activity.withLock { ContinuousClock.now - $0 > Self.idleExit }
                if idle && host.served.withLock({ $0.isEmpty }) {
                    listener.stopListening()
                    serviceLog("layer host \(getpid()) idle, exiting")
                    exit(0)
                }
            }
        }
        idleWatch.stackSize = 64 << 10
        idleWatch.start()
        serviceLog("layer host \(getpid()) serving \(paths.hostSocket)")
        withExtendedLifetime(lock) {}
        listener.serve { connection in host.handle(connection, lock: lock) }
    }

    func handle(_ connection: JSONLineConnection, lock: FileLock) {
        while let request = try? connection.receive(LayerHostRequest.self) {
            activity.withLock { $0 = .now }
            switch request.operation {
            case .attach:
                guard let spec = request.layer else {
                    try? connection.send(LayerHostReply(error: WireError(LazyPullError(.invalidArgument, "attach without a layer"))))
                    continue
                }
                do {
                    try attach(spec)
                    try? connection.send(LayerHostReply())
                } catch {
                    try? connection.send(LayerHostReply(error: WireError(error)))
                }
            case .attachMerged:
                guard let layers = request.layers, !layers.isEmpty, let mountpoint = request.mountpoint else {
                    try? connection.send(LayerHostReply(error: WireError(LazyPullError(.invalidArgument, "attachMerged without layers"))))
                    continue
                }
                do {
                    try attachMerged(layers, at: mountpoint)
                    try? connection.send(LayerHostReply())
                } catch {
                    try? connection.send(LayerHostReply(error: WireError(error)))
                }
            case .warm:
                warm(request.layers ?? [])
                try? connection.send(LayerHostReply())
            case .status:
                try? connection.send(LayerHostReply(layers: status()))
            case .shutdown:
                for layer in served.withLock({ Array($0.values) }) {
                    layer.fileSystem.stopBackgroundFetch()
                    layer.server.stop()
                }
                for server in merged.withLock({ Array($0.values) }) { server.stop() }
                try? connection.send(LayerHostReply())
                withExtendedLifetime(lock) { exit(0) }
            }
        }
    }

    /// Serves the merged tree of `specs` (bottom first) at `mountpoint`, attaching each layer
    /// first; nothing to do when that mountpoint is served already.
    func attachMerged(_ specs: [LazyLayerSpec], at mountpoint: String) throws {
        let started = ContinuousClock.now
        if merged.withLock({ $0[mountpoint] }) != nil { return }
        // Attached in parallel, as separate attaches would be.
        let failures = Mutex<[any Error]>([])
        DispatchQueue.concurrentPerform(iterations: specs.count) { i in
            do { try attach(specs[i]) } catch { failures.withLock { $0.append(error) } }
        }
        if let failure = failures.withLock({ $0.first }) { throw failure }
        let layers = try specs.map { spec in
            guard let layer = served.withLock({ $0[spec.mountpoint] }) else {
                throw LazyPullError(.io, "layer \(spec.descriptor.digest) went away while its image was being mounted")
            }
            return layer.fileSystem
        }
        try attaching.withLock { _ in
            if merged.withLock({ $0[mountpoint] }) != nil { return }
            // A merged view left by a host that died answers ENOTCONN: take it away first.
            if DeadMounts.detach(at: mountpoint) > 0 { serviceLog("detached the dead mount at \(mountpoint)") }
            let tree = MergedFileSystem(layers: layers)
            let built = ContinuousClock.now
            let server = FUSEServer(fileSystem: tree, mountpoint: mountpoint)
            try server.start()
            merged.withLock { $0[mountpoint] = server }
            serviceLog("serving \(layers.count) merged layers at \(mountpoint) after \(ContinuousClock.now - started) (tree built after \(built - started))")
            let watcher = Thread { [self] in
                server.wait()
                merged.withLock { if $0[mountpoint] === server { $0[mountpoint] = nil } }
                serviceLog("merged layers at \(mountpoint) unmounted")
            }
            watcher.stackSize = 256 << 10
            watcher.start()
        }
    }

    /// Mounts `spec`'s layer unless it is served already, starts its prefetch and background
    /// fetch, and returns once the prefetch is done (or after a bounded wait).
    func attach(_ spec: LazyLayerSpec) throws {
        let started = ContinuousClock.now
        if let existing = served.withLock({ $0[spec.mountpoint] }) {
            return waitForPrefetch(existing.fileSystem, spec: spec, since: started)
        }
        let digest = spec.descriptor.digest
        // Until the layer is served, no warm builds it again.
        let ahead = takeWarmed(spec)
        defer { warmed.withLock { if case .building? = $0[Self.warmKey(spec)] { $0[Self.warmKey(spec)] = nil } } }
        let built = try ahead ?? makeFileSystem(spec)
        let fileSystem: LayerFileSystem = try attaching.withLock { _ in
            if let existing = served.withLock({ $0[spec.mountpoint] }) { return existing.fileSystem }
            // A mount left by a host that died answers ENOTCONN: take it away first.
            if DeadMounts.detach(at: spec.mountpoint) > 0 { serviceLog("detached the dead mount at \(spec.mountpoint)") }
            let server = FUSEServer(fileSystem: built, mountpoint: spec.mountpoint)
            try server.start()
            served.withLock { $0[spec.mountpoint] = Served(spec: spec, server: server, fileSystem: built) }
            serviceLog("serving \(digest) at \(spec.mountpoint) after \(ContinuousClock.now - started)")

            let watcher = Thread { [self] in
                server.wait()
                built.stopBackgroundFetch()
                served.withLock { $0[spec.mountpoint] = nil }
                serviceLog("\(digest) at \(spec.mountpoint) unmounted")
            }
            watcher.stackSize = 256 << 10
            watcher.start()
            let limit = spec.cacheLimitBytes ?? 0
            let cacheDirectory = spec.cacheDirectory
            let budget: @Sendable () -> Bool = { limit <= 0 || LazyLayers.cacheUsage(cacheDirectory) < limit }
            let fetcher = Thread { built.fetchAll(background: spec.backgroundFetch, prefetch: spec.prefetch ?? true, budget: budget) }
            if let paths = spec.prefetchPaths, !paths.isEmpty { built.prefetchFiles(paths) }
            fetcher.stackSize = 1 << 20
            fetcher.start()
            return built
        }
        waitForPrefetch(fileSystem, spec: spec, since: started)
    }

    /// Builds the file system of `spec`'s layer from its TOC file (the slow part of an attach:
    /// layers attached at once do it in parallel) and has it pass the dependencies of the
    /// programs it fetches to every layer of its image.
    private func makeFileSystem(_ spec: LazyLayerSpec) throws -> LayerFileSystem {
        let json = try Array(Data(contentsOf: URL(fileURLWithPath: spec.tocPath)))
        let located = LayerTOCReader.Located(
            format: spec.format, toc: try LayerTOCReader.decode(json, layer: spec.descriptor.digest),
            json: json, dataEnd: spec.dataEnd)
        let client = try registryClient(for: spec)
        let digest = spec.descriptor.digest
        let built = try LayerFileSystem(located: located, layer: digest, cacheDirectory: spec.cacheDirectory, reads: reads) {
            try client.streamRange(digest, offset: $0, length: $1, sink: $2)
        }
        // What a program fetched from this layer will load next may sit in any layer of the
        // image: ask them all, served or warmed.
        let reference = spec.reference
        built.onDependencies { [weak self] dependencies in
            guard let self else { return }
            for layer in layers(of: reference) { layer.prefetchFiles(dependencies.candidatePaths) }
        }
        return built
    }

    /// The served and warmed layers of image `reference`.
    private func layers(of reference: String) -> [LayerFileSystem] {
        served.withLock { $0.values.filter { $0.spec.reference == reference }.map(\.fileSystem) }
            + warmed.withLock { table in
                table.values.compactMap {
                    guard case .built(let spec, let fileSystem, _) = $0, spec.reference == reference else { return nil }
                    return fileSystem
                }
            }
    }

    /// The layer of `spec` as built ahead, waiting (at most 5 s) for a build in progress;
    /// nil when there is none, and then this attach is the one building it.
    private func takeWarmed(_ spec: LazyLayerSpec) -> LayerFileSystem? {
        let key = Self.warmKey(spec)
        let deadline = ContinuousClock.now + .seconds(5)
        while true {
            let found: LayerFileSystem?? = warmed.withLock { table in
                switch table[key] {
                case .built(_, let fileSystem, _)?:
                    table[key] = .building
                    return .some(fileSystem)
                case .building?:
                    return ContinuousClock.now < deadline ? nil : .some(nil)
                case nil:
                    table[key] = .building
                    return .some(nil)
                }
            }
            if let found { return found }
            Thread.sleep(forTimeInterval: 0.002)
        }
    }

    /// A built file system is shared only by specs of the same blob *and* TOC (and cache):
    /// another image naming the same blob digest with a TOC of its own gets its own.
    static func warmKey(_ spec: LazyLayerSpec) -> String {
        "\(spec.descriptor.digest) \(LayerTOCReader.tocAnnotation(of: spec.descriptor) ?? "-") \(spec.cacheDirectory)"
    }

    /// Builds the layers of `specs` ahead of their attach, in parallel, and starts fetching
    /// their startup files (``LazyLayerSpec/prefetchPaths``) into the layer cache: containerd
    /// prepares an image's layers one by one, bottom first, and the program a container runs
    /// usually sits in a layer it prepares last. Returns once the trees are built (the TOC
    /// files may go then); a layer served or warmed already is skipped. Best effort: a layer
    /// that cannot be built is attached the usual way.
    func warm(_ specs: [LazyLayerSpec]) {
        let wanted = specs.filter { spec in
            let key = Self.warmKey(spec)
            guard !served.withLock({ $0.values.contains { Self.warmKey($0.spec) == key } }) else { return false }
            return warmed.withLock { table in
                guard table[key] == nil else { return false }
                table[key] = .building
                return true
            }
        }
        DispatchQueue.concurrentPerform(iterations: wanted.count) { i in
            let spec = wanted[i]
            let key = Self.warmKey(spec)
            guard let built = try? makeFileSystem(spec) else {
                warmed.withLock { _ = $0.removeValue(forKey: key) }
                return
            }
            warmed.withLock { $0[key] = .built(spec: spec, fileSystem: built, since: .now) }
            if let paths = spec.prefetchPaths, !paths.isEmpty { built.prefetchFiles(paths) }
            if spec.prefetch ?? true { built.startPrefetch() }
        }
    }

    /// Drops warmed layers no attach took within ``warmExpiry``.
    func dropExpiredWarmLayers() {
        let now = ContinuousClock.now
        warmed.withLock { table in
            table = table.filter {
                guard case .built(_, _, let since) = $0.value else { return true }
                return now - since < Self.warmExpiry
            }
        }
    }

    private func waitForPrefetch(_ fileSystem: LayerFileSystem, spec: LazyLayerSpec, since started: ContinuousClock.Instant) {
        let deadline = Date().addingTimeInterval(spec.prefetchWaitSeconds.map(TimeInterval.init) ?? Self.prefetchWait)
        while !fileSystem.prefetchFinished && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.005)
        }
        if ContinuousClock.now - started > .milliseconds(50) {
            serviceLog("\(spec.descriptor.digest) ready after \(ContinuousClock.now - started)")
        }
    }

    func status() -> [LazyLayerStatus] {
        served.withLock { Array($0.values) }.map { layer in
            LazyLayerStatus(digest: layer.spec.descriptor.digest, format: layer.spec.format,
                            mountpoint: layer.spec.mountpoint, progress: layer.fileSystem.progress)
        }
    }

    /// Every read is bounded: retries stop after two thirds of the fetch timeout and a stalled
    /// transfer is cut after a third, so a read fails with EIO instead of hanging.
    private func registryClient(for spec: LazyLayerSpec) throws -> RegistryClient {
        let key = "\(spec.reference) \(spec.plainHTTP) \(spec.insecure) \(spec.fetchTimeoutSeconds)"
        if let client = clients.withLock({ $0[key] }) { return client }
        var options = RegistryOptions()
        options.plainHTTP = spec.plainHTTP
        options.http.insecureSkipVerify = spec.insecure
        // A read's fetch ends within its timeout (+10 %), whatever the registry does.
        options.limitFetches(to: .seconds(max(spec.fetchTimeoutSeconds, 1)))
        let client = RegistryClient(reference: try Reference(parsing: spec.reference), options: options)
        clients.withLock { $0[key] = client }
        return client
    }
}
