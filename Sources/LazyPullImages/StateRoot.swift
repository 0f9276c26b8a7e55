import CLazyPullShims
import Foundation
import LazyPullContent
import LazyPullOCI
import LazyPullSnapshots

/// lazypull's on-disk state under one root (default `/var/lib/lazypull`):
/// `content/`, `metadata.db`, `snapshots/`.
public final class StateRoot: Sendable {
    public let path: String
    public let content: ContentStore
    public let metadata: MetadataStore
    public let snapshots: SnapshotStore

    public static let defaultPath = "/var/lib/lazypull"

    public init(path: String) throws {
        self.path = path
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o711])
        } catch {
            throw LazyPullError(.io, "cannot create state root \(path): \(error.localizedDescription)")
        }
        content = try ContentStore(root: "\(path)/content")
        metadata = try MetadataStore(path: "\(path)/metadata.db")
        snapshots = try SnapshotStore(root: "\(path)/snapshots", metadata: metadata)
    }

    /// Held shared by pulls and mounts, exclusive by garbage collection.
    public func gcLock(_ mode: FileLock.Mode) throws -> FileLock {
        try FileLock(path: "\(path)/gc.lock", mode: mode)
    }

    /// One `syncfs(2)` for everything written under the root (instead of fsync per file).
    public func sync() {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { lp_syncfs(fd); close(fd) }
    }
}
