import Foundation
import GRPCCore
import LazyPullContent
import LazyPullImages
import LazyPullOCI
import LazyPullService
import SwiftProtobuf

/// containerd's `containerd.services.snapshots.v1.Snapshots` service (the proxy snapshotter
/// API, api/services/snapshots/v1/snapshots.proto) over a ``ContainerdSnapshotter``.
///
/// The snapshotter blocks (file systems, locks, registry requests), so every call runs on a
/// dispatch queue, off the concurrency pool that carries gRPC's own work.
public struct SnapshotsService: Containerd_Services_Snapshots_V1_Snapshots.SimpleServiceProtocol {
    let snapshotter: ContainerdSnapshotter

    public init(snapshotter: ContainerdSnapshotter) { self.snapshotter = snapshotter }

    public func prepare(request: Containerd_Services_Snapshots_V1_PrepareSnapshotRequest,
                        context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_PrepareSnapshotResponse {
        let mounts = try await blocking {
            try snapshotter.prepare(key: request.key, parent: request.parent.nonEmpty, labels: request.labels)
        }
        return .with { $0.mounts = mounts.map(\.message) }
    }

    public func view(request: Containerd_Services_Snapshots_V1_ViewSnapshotRequest,
                     context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_ViewSnapshotResponse {
        let mounts = try await blocking {
            try snapshotter.view(key: request.key, parent: request.parent.nonEmpty, labels: request.labels)
        }
        return .with { $0.mounts = mounts.map(\.message) }
    }

    public func mounts(request: Containerd_Services_Snapshots_V1_MountsRequest,
                       context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_MountsResponse {
        let mounts = try await blocking { try snapshotter.mounts(key: request.key) }
        return .with { $0.mounts = mounts.map(\.message) }
    }

    public func commit(request: Containerd_Services_Snapshots_V1_CommitSnapshotRequest,
                       context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await blocking { try snapshotter.commit(name: request.name, key: request.key, labels: request.labels) }
        return Google_Protobuf_Empty()
    }

    public func remove(request: Containerd_Services_Snapshots_V1_RemoveSnapshotRequest,
                       context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await blocking { try snapshotter.remove(key: request.key) }
        return Google_Protobuf_Empty()
    }

    public func stat(request: Containerd_Services_Snapshots_V1_StatSnapshotRequest,
                     context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_StatSnapshotResponse {
        let info = try await blocking { try snapshotter.stat(key: request.key) }
        return .with { $0.info = info.message }
    }

    public func update(request: Containerd_Services_Snapshots_V1_UpdateSnapshotRequest,
                       context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_UpdateSnapshotResponse {
        let wanted = SnapshotInfo(name: request.info.name, labels: request.info.labels)
        let info = try await blocking { try snapshotter.update(wanted, fieldPaths: request.updateMask.paths) }
        return .with { $0.info = info.message }
    }

    public func list(request: Containerd_Services_Snapshots_V1_ListSnapshotsRequest,
                     response: RPCWriter<Containerd_Services_Snapshots_V1_ListSnapshotsResponse>,
                     context: ServerContext) async throws {
        let infos = try await blocking { try snapshotter.list(filters: request.filters) }
        // Batches keep each message well below gRPC's default 4 MiB limit.
        for start in stride(from: 0, to: infos.count, by: 100) {
            let batch = infos[start..<min(start + 100, infos.count)]
            try await response.write(.with { $0.info = batch.map(\.message) })
        }
    }

    public func usage(request: Containerd_Services_Snapshots_V1_UsageRequest,
                      context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_UsageResponse {
        let usage = try await blocking { try snapshotter.usage(key: request.key) }
        return .with {
            $0.size = usage.size
            $0.inodes = usage.inodes
        }
    }

    public func cleanup(request: Containerd_Services_Snapshots_V1_CleanupRequest,
                        context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await blocking { try snapshotter.cleanup() }
        return Google_Protobuf_Empty()
    }

    /// Runs `work` on a thread of its own (it blocks: a Prepare fetches over the network, and
    /// a dispatch queue would make the next call wait for a free worker); a ``LazyPullError``
    /// becomes the gRPC status containerd
    /// checks for (its errdefs map NotFound, AlreadyExists, InvalidArgument, FailedPrecondition).
    private func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        do {
            return try await withCheckedThrowingContinuation { continuation in
                BlockingThread.run { continuation.resume(with: Result { try work() }) }
            }
        } catch let error as LazyPullError {
            throw RPCError(code: Self.code(of: error), message: error.message)
        } catch {
            throw RPCError(code: .unknown, message: "\(error)")
        }
    }

    static func code(of error: LazyPullError) -> RPCError.Code {
        switch error.code {
        case .notFound: .notFound
        case .alreadyExists: .alreadyExists
        case .invalidArgument, .invalidReference: .invalidArgument
        case .busy: .failedPrecondition
        case .transport, .registry, .unauthorized: .unavailable
        default: .unknown
        }
    }
}

extension String {
    var nonEmpty: String? { isEmpty ? nil : self }
}

extension SnapshotMount {
    var message: Containerd_Types_Mount {
        .with {
            $0.type = type
            $0.source = source
            $0.options = options
        }
    }
}

extension SnapshotInfo {
    /// `kind` is always set: containerd treats an unknown kind as an error.
    var message: Containerd_Services_Snapshots_V1_Info {
        .with {
            $0.name = name
            $0.parent = parent ?? ""
            $0.kind = switch kind {
            case .active: .active
            case .view: .view
            case .committed: .committed
            }
            $0.createdAt = Google_Protobuf_Timestamp(date: created)
            $0.updatedAt = Google_Protobuf_Timestamp(date: updated)
            $0.labels = labels
        }
    }
}
