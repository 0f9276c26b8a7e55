import CLazyPullShims
import Foundation
import LazyPullContent
import LazyPullFS
import LazyPullFUSE
import LazyPullLayers
import LazyPullOCI
import LazyPullRegistry
import LazyPullSnapshots
import Synchronization

/// What a layer host serves: one FUSE mount per lazily read layer.
public struct LayerHostPlan: Codable, Sendable {
    public struct Layer: Codable, Sendable {
        public var reference: String
        public var descriptor: Descriptor
        public var mountpoint: String
        /// The verified TOC, kept so the layer can be served again without asking for it.
        public var tocPath: String
        public var dataEnd: Int64
    }
    public var layers: [Layer]
    public var plainHTTP: Bool
    public var insecure: Bool
    public var readyFile: String
    /// Verified chunks, shared by all lazy layers of the root.
    public var cacheDirectory: String
    /// A read of content that cannot be fetched fails with EIO after about this long.
    public var fetchTimeoutSeconds: Int
    /// Fetch every chunk in the background after the prefetch.
    public var backgroundFetch: Bool
    public var statusFile: String
}

/// What `lazypull status` shows of one lazily read layer; written by the layer host.
public struct LazyLayerStatus: Codable, Sendable {
    public var digest: Digest
    public var format: LazyLayerFormat
    public var mountpoint: String
    public var fetchedBytes: Int64
    public var totalBytes: Int64
    public var background: BackgroundState
}

/// `lazypull mount REF DIR` without `--eager`: the image's eStargz / zstd:chunked layers are
/// served by a background layer host over FUSE and stacked by overlayfs; contents arrive by
/// HTTP Range on first read. (This version starts one host per mount; DESIGN §2a's single
/// long-lived host comes with `lazypull serve`.)
public struct LazyMount: Sendable {
    let state: StateRoot

    public init(state: StateRoot) { self.state = state }

    /// Mounts `reference` at `target` lazily, or returns nil when some layer cannot be read
    /// lazily (the caller then pulls eagerly).
    public func mount(_ reference: Reference, at target: String, readOnly: Bool, options: PullOptions,
                      fetchTimeoutSeconds: Int = 30, backgroundFetch: Bool = true,
                      executable: String) throws -> ImageRecord? {
        let registry = RegistryClient(reference: reference, options: options.registry)
        let gcLock = try state.gcLock(.shared)
        defer { withExtendedLifetime(gcLock) {} }
        let image = try StoredImage.fetch(reference, registry: registry, platform: options.platform, into: state.content)
        let manifest = image.manifest
        guard !manifest.layers.isEmpty, manifest.layers.allSatisfy({ LayerTOCReader.format(of: $0) != nil }) else {
            return nil
        }

        let id = UUID().uuidString
        var keys: [String] = []
        var planLayers: [LayerHostPlan.Layer] = []
        do {
            // Fetch and verify every TOC at once: each costs a few round trips.
            let fetched = Mutex<[Int: Result<(format: LazyLayerFormat, json: [UInt8], dataEnd: Int64), Error>]>([:])
            DispatchQueue.concurrentPerform(iterations: manifest.layers.count) { i in
                let layer = manifest.layers[i]
                let r = Result { try LayerTOCReader.fetchVerified(layer) { try registry.fetchRange(layer.digest, offset: $0, length: $1) } }
                fetched.withLock { $0[i] = r }
            }
            for (i, layer) in manifest.layers.enumerated() {
                let located = try fetched.withLock { $0[i]! }.get()
                let key = "lazy-\(id)-\(i)"
                let snapshot = try state.snapshots.prepare(key: key, parent: nil, kind: .view)
                keys.append(key)
                let tocPath = state.snapshots.directory(of: snapshot) + "/toc.json"
                guard FileManager.default.createFile(atPath: tocPath, contents: Data(located.json)) else {
                    throw LazyPullError(.io, "cannot write \(tocPath)")
                }
                planLayers.append(.init(reference: reference.description, descriptor: layer,
                                        mountpoint: state.snapshots.fsPath(of: snapshot), tocPath: tocPath,
                                        dataEnd: located.dataEnd))
            }
            let planPath = "\(state.path)/hosts/\(id).json"
            try FileManager.default.createDirectory(atPath: "\(state.path)/hosts", withIntermediateDirectories: true)
            let plan = LayerHostPlan(layers: planLayers, plainHTTP: options.registry.plainHTTP,
                                     insecure: options.registry.http.insecureSkipVerify, readyFile: planPath + ".ready",
                                     cacheDirectory: "\(state.path)/cache",
                                     fetchTimeoutSeconds: fetchTimeoutSeconds, backgroundFetch: backgroundFetch,
                                     statusFile: "\(state.path)/hosts/\(id).status.json")
            try JSONEncoder().encode(plan).write(to: URL(fileURLWithPath: planPath))
            let pid = try LayerHost.spawn(executable: executable, root: state.path, plan: planPath,
                                          log: "\(state.path)/hosts/\(id).log", ready: plan.readyFile)

            let lowers = planLayers.reversed().map(\.mountpoint)
            let upperKey = "mount-\(id)"
            if readOnly {
                if lowers.count == 1 { try Mounter.bind(lowers[0], at: target, readOnly: true) }
                else { try Mounter.overlay(lowers: lowers, upper: nil, work: nil, at: target) }
            } else {
                let upper = try state.snapshots.prepare(key: upperKey, parent: nil)
                let dir = state.snapshots.directory(of: upper)
                try Mounter.overlay(lowers: lowers, upper: "\(dir)/fs", work: "\(dir)/work", at: target)
            }
            let record = image.record(platform: options.platform, keepingLayers: false)
            try state.metadata.putImage(record)
            try state.metadata.putMount(MountRecord(target: target, image: record.name,
                                                    snapshotKey: readOnly ? nil : upperKey, readOnly: readOnly,
                                                    lazyLayerKeys: keys, hostPID: pid, hostID: id))
            return record
        } catch {
            for key in keys {
                if let s = try? state.metadata.snapshot(key) { umount2(state.snapshots.fsPath(of: s), Int32(MNT_DETACH)) }
                try? state.snapshots.remove(key)
            }
            throw error
        }
    }

    /// Unmounts the FUSE layers of a lazy mount and waits (bounded) for its host to exit.
    public func release(_ record: MountRecord) throws {
        for key in record.lazyLayerKeys ?? [] {
            guard let snapshot = try state.metadata.snapshot(key) else { continue }
            umount2(state.snapshots.fsPath(of: snapshot), Int32(MNT_DETACH))
        }
        if let pid = record.hostPID {
            let deadline = Date().addingTimeInterval(10)
            while kill(pid, 0) == 0 && Date() < deadline {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid { break }
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
        for key in record.lazyLayerKeys ?? [] where try state.metadata.snapshot(key) != nil {
            try state.snapshots.remove(key)
        }
    }
}

/// The background process that serves the FUSE mounts of lazily read layers.
public enum LayerHost {
    /// Starts `executable fuse-host` in a session of its own (it outlives the CLI) and waits
    /// until it reports every layer mounted.
    static func spawn(executable: String, root: String, plan: String, log: String, ready: String) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, 0x80)   // POSIX_SPAWN_SETSID
        let arguments = [executable, "fuse-host", "--root", root, plan]
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard rc == 0 else { throw LazyPullError(.io, "cannot start the layer host \(executable): \(String(cString: strerror(rc)))") }
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: ready) {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid || Date() > deadline {
                kill(pid, SIGKILL)
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                let last = text.split(separator: "\n").last.map(String.init) ?? "no output"
                throw LazyPullError(.io, "the layer host did not start: \(last)")
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return pid
    }

    /// Serves every layer of `plan` until all of them are unmounted.
    public static func serve(planPath: String) throws {
        let plan = try JSONDecoder().decode(LayerHostPlan.self, from: Data(contentsOf: URL(fileURLWithPath: planPath)))
        var registryOptions = RegistryOptions()
        registryOptions.plainHTTP = plan.plainHTTP
        registryOptions.http.insecureSkipVerify = plan.insecure
        // Bound every read: retries stop after two thirds of the timeout and a stalled
        // transfer is cut after a third, so a read fails with EIO instead of hanging.
        let timeout = max(plan.fetchTimeoutSeconds, 3)
        registryOptions.retry = RetryPolicy(maxAttempts: 100, baseDelay: .milliseconds(200), maxDelay: .seconds(2),
                                            budget: .seconds(timeout * 2 / 3))
        registryOptions.http.stallTimeout = .seconds(max(1, timeout / 3))
        registryOptions.http.connectTimeout = .seconds(max(1, timeout / 3))
        var servers: [FUSEServer] = []
        var layers: [(LayerHostPlan.Layer, LayerFileSystem)] = []
        for layer in plan.layers {
            let client = RegistryClient(reference: try Reference(parsing: layer.reference), options: registryOptions)
            let json = try Array(Data(contentsOf: URL(fileURLWithPath: layer.tocPath)))
            let located = LayerTOCReader.Located(
                format: LayerTOCReader.format(of: layer.descriptor) ?? .estargz,
                toc: try LayerTOCReader.decode(json, layer: layer.descriptor.digest), json: json, dataEnd: layer.dataEnd)
            let digest = layer.descriptor.digest
            let fs = try LayerFileSystem(located: located, cacheDirectory: plan.cacheDirectory) {
                try client.fetchRange(digest, offset: $0, length: $1)
            }
            let server = FUSEServer(fileSystem: fs, mountpoint: layer.mountpoint)
            try server.start()
            servers.append(server)
            layers.append((layer, fs))
        }
        // Prefetch the files the image author listed (bounded wait), then keep fetching the
        // rest in the background.
        for (_, fs) in layers {
            let thread = Thread { fs.fetchAll(background: plan.backgroundFetch) }
            thread.stackSize = 1 << 20
            thread.start()
        }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && layers.contains(where: { $0.1.progress.background == .prefetching }) {
            Thread.sleep(forTimeInterval: 0.01)
        }
        writeStatus(layers, to: plan.statusFile)
        FileManager.default.createFile(atPath: plan.readyFile, contents: nil)
        let served = layers
        let statusWriter = Thread {
            var written: Data?
            while true {
                written = writeStatus(served, to: plan.statusFile, unlessEqualTo: written)
                Thread.sleep(forTimeInterval: 0.25)
            }
        }
        statusWriter.start()
        for server in servers { server.wait() }
        try? FileManager.default.removeItem(atPath: plan.statusFile)
        try? FileManager.default.removeItem(atPath: planPath)
        try? FileManager.default.removeItem(atPath: plan.readyFile)
    }

    /// Writes the status file (atomically) when it differs from `previous`; returns what it holds.
    @discardableResult
    static func writeStatus(_ layers: [(LayerHostPlan.Layer, LayerFileSystem)], to path: String,
                            unlessEqualTo previous: Data? = nil) -> Data? {
        let status = layers.map { layer, fs in
            let p = fs.progress
            return LazyLayerStatus(digest: layer.descriptor.digest, format: LayerTOCReader.format(of: layer.descriptor) ?? .estargz,
                                   mountpoint: layer.mountpoint, fetchedBytes: p.fetched, totalBytes: p.total, background: p.background)
        }
        guard let data = try? JSONEncoder().encode(status) else { return previous }
        guard data != previous else { return previous }
        let temp = path + ".tmp"
        if FileManager.default.createFile(atPath: temp, contents: data) { rename(temp, path) }
        return data
    }
}
