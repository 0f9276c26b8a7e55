import CLazyPullShims
import Foundation
import LazyPullContent
import LazyPullOCI
import LazyPullSnapshots

/// lazypull's on-disk state under one root (default `/var/lib/lazypull`):
/// `content/`, `metadata.db`, `snapshots/`.
///
/// The root is 0700, as containerd's snapshotter roots are (docs/security.md): unpacked
/// layers hold setuid binaries and device nodes of untrusted images, and a local user who
/// could reach them would run them with their owner's rights (moby CVE-2021-41091). A root
/// made by an older version (0711) is tightened when it is opened.
public final class StateRoot: Sendable {
    public let path: String
    public let content: ContentStore
    public let metadata: MetadataStore
    public let snapshots: SnapshotStore

    public static let defaultPath = "/var/lib/lazypull"

    public init(path: String) throws {
        self.path = path
        do {
            try Self.makePrivate(path)
            content = try ContentStore(root: "\(path)/content")
            metadata = try MetadataStore(path: "\(path)/metadata.db")
            snapshots = try SnapshotStore(root: "\(path)/snapshots", metadata: metadata)
        } catch let error as LazyPullError {
            throw error
        } catch {
            throw LazyPullError(.io, "cannot open state root \(path): \(systemErrorText(error))")
        }
    }

    /// Directories directly under the root that older versions made world-readable.
    static let privateDirectories = ["content", "content/blobs", "content/ingest", "snapshots", "cache", "run",
                                     "merged", "tmp"]

    /// Creates the root 0700 (its parents as usual), or tightens an existing one and the
    /// directories and blobs an older version left readable by others.
    static func makePrivate(_ path: String) throws {
        try createDirectories(path, what: "state root")
        var st = stat()
        guard stat(path, &st) == 0 else { throw LazyPullError.io("cannot open state root", path: path, errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw LazyPullError(.io, "state root \(path) is not a directory")
        }
        if st.st_mode & 0o077 != 0 {
            guard chmod(path, 0o700) == 0 else { throw LazyPullError.io("cannot make private", path: path, errno: errno) }
            for directory in privateDirectories { _ = chmod("\(path)/\(directory)", 0o700) }
            let blobs = "\(path)/content/blobs/sha256"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: blobs)) ?? [] {
                _ = chmod("\(blobs)/\(name)", 0o600)
            }
        }
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
