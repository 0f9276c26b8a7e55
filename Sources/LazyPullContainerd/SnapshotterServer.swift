import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import LazyPullImages
import LazyPullOCI
import LazyPullService

/// The gRPC server containerd connects to as a proxy snapshotter: plain HTTP/2 (h2c) on a
/// unix socket, as containerd's `[proxy_plugins]` expects.
public final class SnapshotterServer: Sendable {
    public let socketPath: String
    let server: GRPCServer<HTTP2ServerTransport.Posix>

    public init(socketPath: String, snapshotter: ContainerdSnapshotter) {
        self.socketPath = socketPath
        server = GRPCServer(
            transport: .http2NIOPosix(address: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext),
            services: [SnapshotsService(snapshotter: snapshotter)])
    }

    /// Binds the socket (replacing one a previous process left behind) and serves in the
    /// background; returns once containerd can connect.
    public func start() throws {
        let directory = (socketPath as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o711])
        } catch {
            throw LazyPullError(.io, "cannot create \(directory): \(error.localizedDescription)")
        }
        unlink(socketPath)
        let server = self.server
        Task.detached {
            do { try await server.serve() } catch { serviceLog("snapshotter socket failed: \(error)") }
        }
        let bound = Pending<Void>()
        Task.detached {
            do { _ = try await server.listeningAddress; bound.finish(.success(())) } catch { bound.finish(.failure(error)) }
        }
        do { try bound.wait() } catch {
            throw LazyPullError(.io, "cannot serve the snapshotter socket \(socketPath): \(error)")
        }
        chmod(socketPath, 0o660)
    }

    public func stop() { server.beginGracefulShutdown() }
}
