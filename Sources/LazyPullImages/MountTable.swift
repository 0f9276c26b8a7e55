import Foundation
import LazyPullContent
import LazyPullOCI
import LazyPullSnapshots

/// The mounts `lazypull mount` made: each is an active snapshot (or a read-only view) on
/// top of an image's layers, recorded so `umount` can find and remove it.
public struct MountTable: Sendable {
    let state: StateRoot

    public init(state: StateRoot) { self.state = state }

    public static func canonicalTarget(_ directory: String, create: Bool) throws -> String {
        if create {
            do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
                throw LazyPullError(.io, "cannot create mount directory \(directory): \(error.localizedDescription)")
            }
        }
        guard let resolved = realpath(directory, nil) else {
            throw LazyPullError.io("cannot resolve", path: directory, errno: errno)
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// `mergedLower`: a merged view of all the image's layers, used as the overlay's lower.
    public func mount(_ image: ImageRecord, at target: String, readOnly: Bool, mergedLower: String? = nil) throws {
        let gcLock = try state.gcLock(.shared)
        defer { withExtendedLifetime(gcLock) {} }
        guard let top = image.chainIDs.last?.description else {
            throw LazyPullError(.invalidManifest, "\(image.name) has no layers")
        }
        let key = "mount-\(UUID().uuidString)"
        _ = try state.snapshots.prepare(key: key, parent: top, kind: readOnly ? .view : .active)
        do {
            try state.snapshots.mount(key, at: target, lowers: mergedLower.map { [$0] })
        } catch {
            try? state.snapshots.remove(key)
            throw error
        }
        try state.metadata.putMount(MountRecord(target: target, image: image.name, snapshotKey: key, readOnly: readOnly,
                                                mergedLower: mergedLower))
    }

    public func unmount(_ target: String) throws {
        guard let record = try state.metadata.mount(at: target) else {
            throw LazyPullError(.notFound, "\(target) is not mounted by lazypull")
        }
        do {
            try Mounter.unmount(target)
        } catch let error as LazyPullError where error.code == .io && error.message.contains("Invalid argument") {
            // Already unmounted by someone else: finish the bookkeeping.
        }
        if let key = record.snapshotKey, try state.metadata.snapshot(key) != nil {
            try state.snapshots.remove(key)
        }
        try state.metadata.deleteMount(at: target)
        // The image's merged lower goes with its last mount.
        if let merged = record.mergedLower, try !state.metadata.mounts().contains(where: { $0.mergedLower == merged }) {
            DeadMounts.detachAll(at: merged)
            rmdir(merged)
        }
        // Lazy layers only this mount stood on are not served any more.
        try LazyLayers(state: state).detachUnneeded()
    }
}
