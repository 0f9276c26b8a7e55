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
            try createDirectories(directory, what: "mount directory")
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
        // Unmounted: now forget it. Files first (on a full disk, deleting the upper directory
        // frees the room the metadata update needs; MetadataStore keeps a reserve for the rest).
        // Should the update still fail, the record stays and the same `umount` finishes the work
        // later, since unmounting what is unmounted already is skipped above.
        do {
            if let key = record.snapshotKey, let snapshot = try state.metadata.snapshot(key) {
                try? SnapshotStore.removeTree(state.snapshots.directory(of: snapshot))
                try state.snapshots.remove(key)
            }
            try state.metadata.deleteMount(at: target)
        } catch {
            throw LazyPullError(.io, "\(target) is unmounted but lazypull cannot forget it (\(error)); run `lazypull umount \(target)` again once there is room")
        }
        // The image's merged lower goes with its last mount.
        if let merged = record.mergedLower, try !state.metadata.mounts().contains(where: { $0.mergedLower == merged }) {
            DeadMounts.detachAll(at: merged)
            rmdir(merged)
        }
        // Lazy layers only this mount stood on are not served any more.
        try LazyLayers(state: state).detachUnneeded()
    }
}
