import Foundation
import LazyPullContent
import LazyPullImages
import LazyPullOCI
import LazyPullRegistry
import Synchronization

/// The control plane, `lazypull serve` (DESIGN §2a): owns mounts and snapshots for the CLI
/// (and, later, containerd), and drives the layer host. It can be restarted at any time: on
/// start it re-attaches every lazy layer a mount or container stands on, from local state.
public final class ControlPlane: Sendable {
    let state: StateRoot
    let paths: ServicePaths
    public let host: LayerHostClient
    /// Started on demand by the CLI: end (with the layer host) once nothing is mounted.
    let exitWhenIdle: Bool
    /// Unmounts and the decision to end when idle run one at a time; mounts of different
    /// directories run side by side (a mount that waits for a slow registry does not hold up
    /// another image's), each registered in ``mounting`` for as long as it runs.
    private let operations = Mutex<Void>(())
    /// Directories being mounted.
    private let mounting = Mutex<Set<String>>([])
    private let listener = Mutex<JSONLineListener?>(nil)

    /// Prefetch and cache settings of lazy layers (the CLI's flags set timeout and background fetch).
    let settings: FetchSettings

    public init(state: StateRoot, exitWhenIdle: Bool, settings: FetchSettings = FetchSettings()) {
        self.state = state
        self.settings = settings
        self.paths = ServicePaths(root: state.path)
        self.host = LayerHostClient(paths: paths)
        self.exitWhenIdle = exitWhenIdle
    }

    /// Serves the control socket until the process ends. One control plane serves a root at
    /// a time, the one holding the root's lock. One started on demand (`--exit-when-idle`)
    /// while another holds it exits at once (status 0; the client that started it talks to
    /// the other, or starts one again once that one ended). The service (containerd's
    /// snapshotter, started by systemd) waits for the lock instead: an on-demand control
    /// plane ends once idle. `beforeServing` runs once this process owns the root and has
    /// restored its mounts, before the control socket answers.
    public func run(beforeServing: () throws -> Void = {}) throws -> Never {
        try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true)
        let lock: FileLock
        if let taken = try FileLock.attempt(path: paths.controlLock, mode: .exclusive) {
            lock = taken
        } else if exitWhenIdle {
            log("control plane \(getpid()): another control plane serves \(paths.root), exiting")
            exit(0)
        } else {
            log("control plane \(getpid()): waiting until the control plane serving \(paths.root) ends")
            lock = try FileLock(path: paths.controlLock, mode: .exclusive)
        }
        try restore()
        try beforeServing()
        // The first lazy mount needs the layer host: start it while the mount resolves.
        host.startInBackground()
        let listener = try JSONLineListener(path: paths.controlSocket)
        self.listener.withLock { $0 = listener }
        log("control plane \(getpid()) serving \(paths.controlSocket)")
        if exitWhenIdle { watchIdle() }
        listener.serve { [self] connection in
            withExtendedLifetime(lock) {
                activity.withLock { $0.connections += 1; $0.last = .now }
                defer { activity.withLock { $0.connections -= 1; $0.last = .now } }
                handle(connection)
            }
        }
    }

    /// Connections being handled, and when the last one began or ended.
    private let activity = Mutex<(connections: Int, last: ContinuousClock.Instant)>((0, .now))
    /// A control plane started on demand that has had nothing to do for this long, with nothing
    /// mounted, ends (its starter died before asking anything, or its mount failed early).
    static let idleExit: Duration = .seconds(60)

    /// Ends the process once it has been idle for ``idleExit``.
    private func watchIdle() {
        let thread = Thread { [self] in
            while true {
                Thread.sleep(forTimeInterval: 5)
                let quiet = activity.withLock { $0.connections == 0 && ContinuousClock.now - $0.last > Self.idleExit }
                guard quiet else { continue }
                // (A client that connected just before the socket went away finds the
                // connection closed without an answer and asks a successor.)
                if operations.withLock({ _ in (try? stopListeningIfIdle()) ?? false }) { shutdown() }
            }
        }
        thread.stackSize = 64 << 10
        thread.start()
    }

    /// Serves again every lazy layer that something stands on (after a restart of this
    /// process or of the layer host). Needs only local state.
    func restore() throws {
        for (key, spec) in try LazyLayers(state: state).needed() {
            do { try host.attach(spec) } catch { log("cannot serve lazy layer \(key): \(error)") }
        }
        for mount in try state.metadata.mounts() {
            guard let merged = mount.mergedLower, let image = try state.metadata.image(named: mount.image),
                  let specs = try lazySpecs(of: image) else { continue }
            do { try host.attachMerged(specs, at: merged) } catch { log("cannot serve the merged layers of \(mount.target): \(error)") }
        }
    }

    func handle(_ connection: JSONLineConnection) {
        guard let request = try? connection.receive(ControlRequest.self) else { return }
        let reply: ControlReply
        var idle = false
        do {
            switch request.operation {
            case .mount:
                guard let mount = request.mount else { throw LazyPullError(.invalidArgument, "mount without arguments") }
                try operations.withLock { _ in
                    try mounting.withLock { targets in
                        guard targets.insert(mount.target).inserted else {
                            throw LazyPullError(.busy, "\(mount.target) is being mounted already")
                        }
                    }
                }
                defer { _ = mounting.withLock { $0.remove(mount.target) } }
                let image = try self.mount(mount) { notice in try? connection.send(ControlReply(notice: notice)) }
                reply = ControlReply(done: true, image: image)
            case .umount:
                guard let target = request.target else { throw LazyPullError(.invalidArgument, "umount without a directory") }
                idle = try operations.withLock { _ in
                    try MountTable(state: state).unmount(target)
                    evictCache()
                    return try stopListeningIfIdle()
                }
                reply = ControlReply(done: true)
            case .status:
                reply = ControlReply(done: true, status: try MountStatusReport(state: state).build(
                    target: request.target, served: try host.status()))
            case .shutdown:
                try? connection.send(ControlReply(done: true))
                shutdown()
            }
        } catch {
            reply = ControlReply(done: true, error: WireError(error))
            if request.operation == .mount {
                idle = operations.withLock { _ in (try? stopListeningIfIdle()) ?? false }
            }
        }
        try? connection.send(reply)
        if idle { shutdown() }
    }

    /// When started on demand and nothing is mounted any more: stop taking requests, so the
    /// next client starts a new control plane, and say the process should end.
    func stopListeningIfIdle() throws -> Bool {
        guard exitWhenIdle, mounting.withLock({ $0.isEmpty }), try isIdle() else { return false }
        listener.withLock { $0?.stopListening() }
        return true
    }

    /// `lazypull mount REF DIR`: the image's lazily readable layers are served by the layer
    /// host, the others pulled (with a notice), and overlayfs stacks them at DIR.
    func mount(_ request: MountRequest, notice: @escaping @Sendable (String) -> Void) throws -> String {
        let started = ContinuousClock.now
        log("mount \(request.reference) at \(request.target)")
        let reference = try Reference(parsing: request.reference)
        if try state.metadata.mount(at: request.target) != nil {
            throw LazyPullError(.alreadyExists, "\(request.target) is already a lazypull mount; run `lazypull umount \(request.target)` first")
        }
        var options = PullOptions()
        if let platform = request.platform { options.platform = try Platform(parsing: platform) }
        options.registry.plainHTTP = request.plainHTTP
        options.registry.http.insecureSkipVerify = request.insecure
        options.parallelLayers = 8
        let puller = ImagePuller(state: state)
        var record = request.pull ? nil : try puller.localImage(reference, platform: options.platform)
        let attachedByPull = Mutex<Set<String>>([])
        if record == nil {
            var lazy = LazyLayerOptions(attach: { [host] spec in
                try host.attach(spec)
                attachedByPull.withLock { _ = $0.insert(spec.mountpoint) }
            }, notice: notice)
            settings.apply(to: &lazy, timeoutAndBackground: false)
            lazy.fetchTimeoutSeconds = request.fetchTimeoutSeconds
            lazy.backgroundFetch = request.backgroundFetch
            record = try puller.pull(reference, options: options, lazy: lazy)
        }
        guard let record else { throw LazyPullError(.notFound, "\(reference) not found") }
        // Lazy layers that were there before this pull are served too; this mount's settings
        // apply to those not served yet (a served layer keeps its own).
        let layers = LazyLayers(state: state)
        let attached = attachedByPull.withLock { $0 }
        for chainID in record.chainIDs {
            guard let snapshot = try state.metadata.snapshot(chainID.description), var spec = layers.spec(of: snapshot),
                  !attached.contains(spec.mountpoint) else { continue }
            spec.fetchTimeoutSeconds = request.fetchTimeoutSeconds
            spec.backgroundFetch = request.backgroundFetch
            try host.attach(spec)
        }
        // An image whose layers are all lazy gets one merged lower instead of a stack of them.
        let merged = try mergedLower(for: record)
        let layersReady = ContinuousClock.now
        do {
            try MountTable(state: state).mount(record, at: request.target, readOnly: request.readOnly, mergedLower: merged)
        } catch {
            if let merged, try !state.metadata.mounts().contains(where: { $0.mergedLower == merged }) {
                DeadMounts.detachAll(at: merged)
                rmdir(merged)
            }
            throw error
        }
        log("mounted \(record.name) at \(request.target): layers ready after \(layersReady - started), overlay after \(ContinuousClock.now - started)")
        return record.name
    }

    /// Brings the layer data cache under its limit, from layers the layer host does not serve
    /// (after an unmount, those of the image it showed).
    func evictCache() { settings.evictCache(in: state) }

    /// The specs of the image's layers, bottom first, when every one is lazy and there are
    /// several; nil otherwise.
    func lazySpecs(of record: ImageRecord) throws -> [LazyLayerSpec]? {
        guard record.chainIDs.count > 1 else { return nil }
        let layers = LazyLayers(state: state)
        var specs: [LazyLayerSpec] = []
        for chainID in record.chainIDs {
            guard let snapshot = try state.metadata.snapshot(chainID.description), let spec = layers.spec(of: snapshot) else { return nil }
            specs.append(spec)
        }
        return specs
    }

    /// Serves the merged tree of `record`'s lazy layers under the root (one per image, shared
    /// by its mounts) and returns where; nil when the image has layers that are not lazy.
    func mergedLower(for record: ImageRecord) throws -> String? {
        guard let specs = try lazySpecs(of: record), let top = record.chainIDs.last else { return nil }
        let mountpoint = "\(state.path)/merged/\(top.encoded)"
        do {
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
            try host.attachMerged(specs, at: mountpoint)
        } catch {
            rmdir(mountpoint)
            throw error
        }
        return mountpoint
    }

    /// Nothing mounted and no lazy layer in use.
    func isIdle() throws -> Bool {
        try state.metadata.mounts().isEmpty && LazyLayers(state: state).needed().isEmpty
    }

    func shutdown() -> Never {
        try? host.shutdown()
        log("control plane \(getpid()) exiting")
        exit(0)
    }

    func log(_ line: String) {
        serviceLog("\(line)")
    }
}

/// `lazypull status`: per mount and layer, how it is read and how far its fetch has come.
public struct MountStatusReport: Sendable {
    let state: StateRoot

    public init(state: StateRoot) { self.state = state }

    /// `served`: the layer host's view of the lazy layers it serves (empty when none runs).
    public func build(target: String?, served: [LazyLayerStatus]) throws -> [MountStatus] {
        var mounts = try state.metadata.mounts()
        if let target {
            mounts = mounts.filter { $0.target == target }
            guard !mounts.isEmpty else { throw LazyPullError(.notFound, "\(target) is not mounted by lazypull") }
        }
        let byMountpoint = Dictionary(served.map { ($0.mountpoint, $0) }, uniquingKeysWith: { a, _ in a })
        let lazyLayers = LazyLayers(state: state)
        return try mounts.map { mount in
            var layers: [LayerStatus] = []
            if let image = try state.metadata.image(named: mount.image),
               case .manifest(let manifest)? = try? ManifestDocument.decode(try state.content.read(image.manifest),
                                                                            contentType: nil, what: image.name) {
                for (descriptor, chainID) in zip(manifest.layers, image.chainIDs) {
                    let snapshot = try state.metadata.snapshot(chainID.description)
                    if let snapshot, let spec = lazyLayers.spec(of: snapshot) {
                        let live = byMountpoint[spec.mountpoint]
                        layers.append(LayerStatus(digest: descriptor.digest.description, format: spec.format.rawValue, mode: "lazy",
                                                  fetchedBytes: live?.progress.fetchedBytes ?? 0,
                                                  fetchRequests: live?.progress.fetchRequests ?? 0,
                                                  totalBytes: live?.progress.totalBytes ?? spec.dataEnd,
                                                  background: live?.progress.background.rawValue ?? "not served"))
                    } else {
                        layers.append(LayerStatus(digest: descriptor.digest.description,
                                                  format: (try? LayerCompression(mediaType: descriptor.mediaType).rawValue) ?? descriptor.mediaType,
                                                  mode: "eager", fetchedBytes: descriptor.size, fetchRequests: 0,
                                                  totalBytes: descriptor.size,
                                                  background: "n/a"))
                    }
                }
            }
            return MountStatus(target: mount.target, image: mount.image, layers: layers.reversed())
        }
    }
}

/// The CLI's handle on the control plane, which it starts when none runs.
public struct ControlClient: Sendable {
    let paths: ServicePaths
    /// The configuration file a control plane this client starts reads (`serve --config`).
    let configPath: String?

    public init(root: String, configPath: String? = nil) {
        paths = ServicePaths(root: root)
        self.configPath = configPath
    }

    /// Sends `request` and returns the final reply; notices go to `notice` as they arrive.
    /// With `start`, a control plane is started (ending itself once idle) if none runs;
    /// without, nil means none runs.
    public func call(_ request: ControlRequest, start: Bool, retry: Bool = true,
                     notice: (String) -> Void = { _ in }) throws -> ControlReply? {
        let connection: JSONLineConnection?
        if start {
            connection = try Daemon.connect(to: paths.controlSocket, lock: paths.controlLock,
                                            starting: ["serve", "--root", paths.root, "--exit-when-idle"]
                                                + (configPath.map { ["--config", $0] } ?? []),
                                            executable: Daemon.serveExecutable, log: paths.controlLog, what: "control plane")
        } else {
            connection = try JSONLineConnection.connect(to: paths.controlSocket)
        }
        guard let connection else { return nil }
        try connection.send(request)
        var answered = false
        while let reply = try connection.receive(ControlReply.self) {
            answered = true
            if let text = reply.notice { notice(text) }
            guard reply.done else { continue }
            if let error = reply.error { throw error.error }
            return reply
        }
        // A control plane that was ending as we connected closes without a word: ask its
        // successor.
        if !answered && retry { return try call(request, start: start, retry: false, notice: notice) }
        throw LazyPullError(.io, "the control plane closed the connection (see \(paths.controlLog))")
    }
}
