import Foundation
import LazyPullContent
import LazyPullOCI
import LazyPullSnapshots

/// Removes content and snapshots that no image or mount references (containerd's GC,
/// reduced to the two roots lazypull has: image records and mounts). Snapshots made through
/// containerd's snapshot service are left to containerd's own GC.
public struct GarbageCollector: Sendable {
    let state: StateRoot

    public init(state: StateRoot) { self.state = state }

    public struct Report: Sendable, Equatable {
        public var blobs = 0
        public var snapshots = 0
        public var bytes: Int64 = 0
    }

    public func collect() throws -> Report {
        let lock = try state.gcLock(.exclusive)
        defer { withExtendedLifetime(lock) {} }
        var report = Report()
        let images = try state.metadata.images()
        let liveContent = Set(images.flatMap(\.content))
        var liveSnapshots = Set(images.flatMap { $0.chainIDs.map(\.description) })
        for mount in try state.metadata.mounts() {
            if let key = mount.snapshotKey { liveSnapshots.insert(key) }
        }
        // containerd's snapshots are collected by containerd (through Remove).
        let all = try state.metadata.snapshots().filter { !$0.isContainerdOwned }
        // Parents of live snapshots stay too.
        let byKey = Dictionary(uniqueKeysWithValues: all.map { ($0.key, $0) })
        for key in Array(liveSnapshots) {
            var parent = byKey[key]?.parent
            while let p = parent { liveSnapshots.insert(p); parent = byKey[p]?.parent }
        }
        // Children before parents (ids do not tell: layers are unpacked in parallel and
        // parented at commit time).
        var remaining = all.filter { !liveSnapshots.contains($0.key) }
        while !remaining.isEmpty {
            let parents = Set(remaining.compactMap(\.parent))
            let leaves = remaining.filter { !parents.contains($0.key) }
            guard !leaves.isEmpty else { break }
            for snapshot in leaves {
                try state.snapshots.remove(snapshot.key)
                report.snapshots += 1
            }
            let removed = Set(leaves.map(\.key))
            remaining.removeAll { removed.contains($0.key) }
        }
        for digest in state.content.list() where !liveContent.contains(digest) {
            report.bytes += state.content.size(of: digest) ?? 0
            try state.content.delete(digest)
            try state.metadata.deleteContent(digest)
            report.blobs += 1
        }
        // Partial downloads are garbage too: no pull runs while the exclusive GC lock is held.
        let ingestRoot = "\(state.content.root)/ingest"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: ingestRoot)) ?? [] {
            try? FileManager.default.removeItem(atPath: "\(ingestRoot)/\(name)")
        }
        // Cached contents of layers no lazy snapshot reads any more.
        report.bytes += try LazyLayers(state: state).pruneCache()
        // Snapshot directories without a row (a crash between mkdir and insert).
        let known = Set(try state.metadata.snapshots().map { String($0.id) })
        for name in (try? FileManager.default.contentsOfDirectory(atPath: state.snapshots.root)) ?? []
        where name != "locks" && !known.contains(name) {
            try SnapshotStore.removeTree("\(state.snapshots.root)/\(name)")
        }
        return report
    }
}
