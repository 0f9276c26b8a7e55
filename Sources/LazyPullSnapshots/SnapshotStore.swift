import CLazyPullShims
import Foundation
import LazyPullContent
import LazyPullOCI

/// Snapshots with containerd's semantics (committed parents, active and view children),
/// stored as `snapshots/<id>/fs` (the layer tree, overlay lower format) and
/// `snapshots/<id>/work` (overlay workdir of an active snapshot).
public final class SnapshotStore: Sendable {
    public let root: String
    public let metadata: MetadataStore

    public init(root: String, metadata: MetadataStore) throws {
        self.root = root
        self.metadata = metadata
        // 0700 like the state root: a snapshot's tree is an untrusted image's (setuid files,
        // devices); only root reaches it, through the mounts it makes.
        try FileManager.default.createDirectory(atPath: "\(root)/locks", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        chmod(root, 0o700)
    }

    public func directory(of snapshot: SnapshotRecord) -> String { "\(root)/\(snapshot.id)" }
    public func fsPath(of snapshot: SnapshotRecord) -> String { "\(root)/\(snapshot.id)/fs" }

    /// A lock that serializes work on one named snapshot across processes.
    public func lock(_ name: String) throws -> FileLock {
        let safe = name.replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: ":", with: "_")
        return try FileLock(path: "\(root)/locks/\(safe)", mode: .exclusive)
    }

    /// Creates a snapshot and its directories.
    public func prepare(key: String, parent: String?, kind: SnapshotKind = .active,
                        labels: [String: String] = [:]) throws -> SnapshotRecord {
        let record = try metadata.createSnapshot(key: key, parent: parent, kind: kind, labels: labels)
        do {
            let dir = directory(of: record)
            try? FileManager.default.removeItem(atPath: dir)
            // `<id>` 0700; `fs` 0755 is the layer root's mode, as containerd's snapshotters make it.
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            try FileManager.default.createDirectory(atPath: "\(dir)/fs", withIntermediateDirectories: false,
                                                    attributes: [.posixPermissions: 0o755])
            if kind == .active {
                try FileManager.default.createDirectory(atPath: "\(dir)/work", withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            }
        } catch {
            try? metadata.deleteSnapshot(key)
            throw LazyPullError(.io, "cannot create snapshot directory for \(key): \(systemErrorText(error))")
        }
        return record
    }

    public func commit(key: String, as name: String, parent: String?, labels: [String: String]? = nil) throws {
        try metadata.commitSnapshot(key: key, as: name, parent: .some(parent), labels: labels)
        if let record = try metadata.snapshot(name) {
            try? FileManager.default.removeItem(atPath: "\(directory(of: record))/work")
        }
    }

    /// Removes a snapshot's row and directory.
    public func remove(_ key: String) throws {
        guard let record = try metadata.snapshot(key) else {
            throw LazyPullError(.notFound, "snapshot \(key) not found")
        }
        try metadata.deleteSnapshot(key)
        // A lazy layer's `fs` is a FUSE mount: detach it (its server then lets it go).
        umount2(fsPath(of: record), Int32(MNT_DETACH))
        try Self.removeTree(directory(of: record))
    }

    /// The `fs` directories of `key` and its ancestors, nearest first (overlay `lowerdir` order).
    public func lowerDirectories(from key: String) throws -> [String] {
        var dirs: [String] = []
        var next: String? = key
        while let k = next {
            guard let record = try metadata.snapshot(k) else { throw LazyPullError(.notFound, "snapshot \(k) not found") }
            dirs.append(fsPath(of: record))
            next = record.parent
        }
        return dirs
    }

    /// Mounts snapshot `key` at `target`: an overlay of its parents with its own `fs` as the
    /// writable upper (active), or the parents alone, read-only (view).
    /// `lowers` replaces the parents' directories (a merged view of them).
    public func mount(_ key: String, at target: String, lowers override: [String]? = nil) throws {
        guard let record = try metadata.snapshot(key) else { throw LazyPullError(.notFound, "snapshot \(key) not found") }
        let lowers = try override ?? record.parent.map(lowerDirectories(from:)) ?? []
        switch record.kind {
        case .active:
            let dir = directory(of: record)
            if lowers.isEmpty {
                try Mounter.bind(fsPath(of: record), at: target, readOnly: false)
            } else {
                try Mounter.overlay(lowers: lowers, upper: "\(dir)/fs", work: "\(dir)/work", at: target)
            }
        case .view, .committed:
            let all = record.kind == .committed && override == nil ? try lowerDirectories(from: key) : lowers
            if all.count == 1 {
                try Mounter.bind(all[0], at: target, readOnly: true)
            } else if all.isEmpty {
                try Mounter.bind(fsPath(of: record), at: target, readOnly: true)
            } else {
                try Mounter.overlay(lowers: all, upper: nil, work: nil, at: target)
            }
        }
    }

    /// Deletes a directory tree without following symlinks (layer trees hold hostile names).
    public static func removeTree(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        // FileManager.removeItem does not follow symlinks and handles read-only directories as root.
        do { try FileManager.default.removeItem(atPath: path) } catch {
            throw LazyPullError(.io, "cannot remove \(path): \(systemErrorText(error))")
        }
    }
}

/// mount(2) and umount2(2) for the two kinds of mounts lazypull makes.
public enum Mounter {
    /// Overlay mount (Linux overlayfs.rst): `lowers` nearest first; read-only without `upper`.
    public static func overlay(lowers: [String], upper: String?, work: String?, at target: String) throws {
        var options = "lowerdir=" + lowers.map(escape).joined(separator: ":")
        if let upper, let work { options += ",upperdir=\(escape(upper)),workdir=\(escape(work))" }
        options += ",index=off"
        let flags = upper == nil ? UInt(MS_RDONLY) : 0
        guard Glibc.mount("overlay", target, "overlay", flags, options) == 0 else {
            throw LazyPullError.io("cannot mount overlay at", path: target, errno: errno)
        }
    }

    public static func bind(_ source: String, at target: String, readOnly: Bool) throws {
        guard Glibc.mount(source, target, nil, UInt(MS_BIND), nil) == 0 else {
            throw LazyPullError.io("cannot bind-mount \(source) at", path: target, errno: errno)
        }
        if readOnly {
            guard Glibc.mount(nil, target, nil, UInt(MS_BIND | MS_REMOUNT | MS_RDONLY), nil) == 0 else {
                let e = errno
                umount2(target, Int32(MNT_DETACH))
                throw LazyPullError.io("cannot make read-only", path: target, errno: e)
            }
        }
    }

    public static func unmount(_ target: String) throws {
        guard umount2(target, 0) == 0 else {
            let e = errno
            if e == EBUSY {
                throw LazyPullError(.busy, "cannot unmount \(target): it is busy (a process is using it)")
            }
            throw LazyPullError.io("cannot unmount", path: target, errno: e)
        }
    }

    /// overlayfs separates option values with `,` and lowers with `:`; escape both.
    static func escape(_ path: String) -> String {
        path.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ":", with: "\\:")
            .replacingOccurrences(of: ",", with: "\\,")
    }
}
