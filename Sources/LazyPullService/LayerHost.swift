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
    /// One registry client per reference and transport settings, so tokens and connections
    /// are shared by that image's layers.
    private let clients = Mutex<[String: RegistryClient]>([:])
    /// Attaches mount one at a time (two attaches of one layer must not both mount it).
    private let attaching = Mutex<Void>(())
    /// How long an attach waits for the layer's prefetch before answering.
    static let prefetchWait: TimeInterval = 10

    public init() {}

    /// Serves `paths.hostSocket` until shut down. Returns at once (status 0) when another
    /// host already serves this root.
    public static func run(paths: ServicePaths) throws -> Never {
        try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true)
        guard let lock = try FileLock.attempt(path: paths.hostLock, mode: .exclusive) else { exit(0) }
        let host = LayerHost()
        let listener = try JSONLineListener(path: paths.hostSocket)
        FileHandle.standardError.write(Data("lazypull: layer host \(getpid()) serving \(paths.hostSocket)\n".utf8))
        withExtendedLifetime(lock) {}
        listener.serve { connection in host.handle(connection, lock: lock) }
    }

    func handle(_ connection: JSONLineConnection, lock: FileLock) {
        while let request = try? connection.receive(LayerHostRequest.self) {
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
            case .status:
                try? connection.send(LayerHostReply(layers: status()))
            case .shutdown:
                for layer in served.withLock({ Array($0.values) }) {
                    layer.fileSystem.stopBackgroundFetch()
                    layer.server.stop()
                }
                try? connection.send(LayerHostReply())
                withExtendedLifetime(lock) { exit(0) }
            }
        }
    }

    /// Mounts `spec`'s layer unless it is served already, starts its prefetch and background
    /// fetch, and returns once the prefetch is done (or after a bounded wait).
    func attach(_ spec: LazyLayerSpec) throws {
        let fileSystem: LayerFileSystem = try attaching.withLock { _ in
            if let existing = served.withLock({ $0[spec.mountpoint] }) { return existing.fileSystem }
            // A mount left by a host that died answers ENOTCONN: take it away first.
            var st = stat()
            if stat(spec.mountpoint, &st) != 0 && errno == ENOTCONN {
                umount2(spec.mountpoint, Int32(MNT_DETACH))
            }
            let json = try Array(Data(contentsOf: URL(fileURLWithPath: spec.tocPath)))
            let located = LayerTOCReader.Located(
                format: spec.format, toc: try LayerTOCReader.decode(json, layer: spec.descriptor.digest),
                json: json, dataEnd: spec.dataEnd)
            let client = try registryClient(for: spec)
            let digest = spec.descriptor.digest
            let fileSystem = try LayerFileSystem(located: located, cacheDirectory: spec.cacheDirectory) {
                try client.fetchRange(digest, offset: $0, length: $1)
            }
            let server = FUSEServer(fileSystem: fileSystem, mountpoint: spec.mountpoint)
            try server.start()
            served.withLock { $0[spec.mountpoint] = Served(spec: spec, server: server, fileSystem: fileSystem) }
            FileHandle.standardError.write(Data("lazypull: serving \(digest) at \(spec.mountpoint)\n".utf8))

            let watcher = Thread { [self] in
                server.wait()
                fileSystem.stopBackgroundFetch()
                served.withLock { $0[spec.mountpoint] = nil }
                FileHandle.standardError.write(Data("lazypull: \(digest) at \(spec.mountpoint) unmounted\n".utf8))
            }
            watcher.stackSize = 256 << 10
            watcher.start()
            let fetcher = Thread { fileSystem.fetchAll(background: spec.backgroundFetch) }
            fetcher.stackSize = 1 << 20
            fetcher.start()
            return fileSystem
        }
        let deadline = Date().addingTimeInterval(Self.prefetchWait)
        while !fileSystem.prefetchFinished && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.005)
        }
    }

    func status() -> [LazyLayerStatus] {
        served.withLock { Array($0.values) }.map { layer in
            let p = layer.fileSystem.progress
            return LazyLayerStatus(digest: layer.spec.descriptor.digest, format: layer.spec.format,
                                   mountpoint: layer.spec.mountpoint, fetchedBytes: p.fetched, totalBytes: p.total,
                                   background: p.background)
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
        let timeout = max(spec.fetchTimeoutSeconds, 3)
        options.retry = RetryPolicy(maxAttempts: 100, baseDelay: .milliseconds(200), maxDelay: .seconds(2),
                                    budget: .seconds(timeout * 2 / 3))
        options.http.stallTimeout = .seconds(max(1, timeout / 3))
        options.http.connectTimeout = .seconds(max(1, timeout / 3))
        let client = RegistryClient(reference: try Reference(parsing: spec.reference), options: options)
        clients.withLock { $0[key] = client }
        return client
    }
}
