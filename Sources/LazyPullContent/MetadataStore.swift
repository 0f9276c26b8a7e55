import Foundation
import LazyPullOCI

/// An image record: a name pointing at a target descriptor (containerd's images table).
public struct ImageRecord: Sendable, Codable, Equatable {
    public var name: String
    public var target: Descriptor
    public var manifest: Digest
    public var config: Digest
    /// Chain IDs of the layers, bottom first: the snapshots this image needs.
    public var chainIDs: [Digest]
    /// Every blob the image needs: index, manifest, config, layers.
    public var content: [Digest]
    /// Total compressed size of the layers.
    public var size: Int64
    public var platform: String
    public var created: Date
    public var labels: [String: String]

    public init(name: String, target: Descriptor, manifest: Digest, config: Digest, chainIDs: [Digest],
                content: [Digest], size: Int64, platform: String, created: Date = Date(), labels: [String: String] = [:]) {
        self.content = content
        self.size = size
        self.name = name
        self.target = target
        self.manifest = manifest
        self.config = config
        self.chainIDs = chainIDs
        self.platform = platform
        self.created = created
        self.labels = labels
    }
}

/// Snapshot kinds (containerd snapshots API): committed layers are immutable parents;
/// active snapshots are writable; views are read-only.
public enum SnapshotKind: String, Sendable, Codable {
    case committed, active, view
}

public struct SnapshotRecord: Sendable, Equatable {
    public var id: Int64
    public var key: String
    public var parent: String?
    public var kind: SnapshotKind
    public var labels: [String: String]
    public var created: Date
    public var updated: Date

    /// Snapshots made through containerd's snapshot service: their keys are containerd's
    /// `<namespace>/<sequence>/<key>` (or lazypull's `remote/<chain ID>`); the CLI's never
    /// contain a `/`. The CLI's garbage collector leaves them to containerd's.
    public var isContainerdOwned: Bool { key.contains("/") }
}

/// A mount made by `lazypull mount`: where, of which image, on which active snapshot.
public struct MountRecord: Sendable, Codable, Equatable {
    public var target: String
    public var image: String
    public var snapshotKey: String?
    public var readOnly: Bool
    /// Where the layer host serves the merged tree of the image's lazy layers, the overlay's
    /// one lower (nil: the layers are stacked one by one).
    public var mergedLower: String?

    public init(target: String, image: String, snapshotKey: String?, readOnly: Bool, mergedLower: String? = nil) {
        self.target = target
        self.image = image
        self.snapshotKey = snapshotKey
        self.readOnly = readOnly
        self.mergedLower = mergedLower
    }
}

/// The SQLite metadata database (`metadata.db`): images, content labels, snapshots, mounts.
///
/// A full disk must not keep lazypull from forgetting things: removing a mount, snapshot or
/// image writes to the database (its write-ahead log) before the files that free space go.
/// So the store keeps a reserve file beside the database (`metadata.db.reserve`,
/// ``reserveBytes``): when a deletion or opening the database fails with SQLite's "database
/// or disk is full", the reserve is given back and the step tried once more. It is made again
/// (best effort) when the store is next opened with room for it.
public final class MetadataStore: Sendable {
    private let db: SQLiteConnection
    private let reserve: DiskReserve

    /// Size of the reserve file: room for the write-ahead log of a few deletions.
    public static let reserveBytes: Int64 = 1 << 20

    public init(path: String) throws {
        reserve = DiskReserve(path: path + ".reserve", bytes: Self.reserveBytes)
        db = try reserve.retryingWhenFull { try SQLiteConnection(path: path) }
        try reserve.retryingWhenFull { try self.createTables() }
        reserve.replenish()
    }

    private func createTables() throws {
        try db.transaction {
            try db.execute("""
                CREATE TABLE IF NOT EXISTS images (
                    name TEXT PRIMARY KEY, record TEXT NOT NULL)
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS content (
                    digest TEXT PRIMARY KEY, size INTEGER NOT NULL, labels TEXT NOT NULL DEFAULT '{}')
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS snapshots (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE NOT NULL, parent TEXT,
                    kind TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '{}',
                    created REAL NOT NULL, updated REAL NOT NULL)
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS mounts (
                    target TEXT PRIMARY KEY, record TEXT NOT NULL)
                """)
        }
    }

    // MARK: Images

    public func putImage(_ image: ImageRecord) throws {
        try db.execute("INSERT OR REPLACE INTO images (name, record) VALUES (?, ?)",
                       [.text(image.name), .text(try Self.encode(image))])
    }

    public func image(named name: String) throws -> ImageRecord? {
        try db.query("SELECT record FROM images WHERE name = ?", [.text(name)]).first
            .flatMap { $0[0].text }.map { try Self.decode(ImageRecord.self, $0) }
    }

    public func images() throws -> [ImageRecord] {
        try db.query("SELECT record FROM images ORDER BY name").compactMap { $0[0].text }
            .map { try Self.decode(ImageRecord.self, $0) }
    }

    public func deleteImage(named name: String) throws -> Bool {
        try reserve.retryingWhenFull { try deleteImageRow(named: name) }
    }

    private func deleteImageRow(named name: String) throws -> Bool {
        try db.transaction {
            let found = try db.query("SELECT 1 FROM images WHERE name = ?", [.text(name)]).isEmpty == false
            try db.execute("DELETE FROM images WHERE name = ?", [.text(name)])
            return found
        }
    }

    // MARK: Content labels

    public func putContent(_ digest: Digest, size: Int64, labels: [String: String] = [:]) throws {
        try db.execute("""
            INSERT INTO content (digest, size, labels) VALUES (?, ?, ?)
            ON CONFLICT(digest) DO UPDATE SET labels = excluded.labels
            """, [.text(digest.description), .integer(size), .text(try Self.encode(labels))])
    }

    public func contentLabels(_ digest: Digest) throws -> [String: String]? {
        try db.query("SELECT labels FROM content WHERE digest = ?", [.text(digest.description)]).first
            .flatMap { $0[0].text }.map { try Self.decode([String: String].self, $0) }
    }

    public func deleteContent(_ digest: Digest) throws {
        try reserve.retryingWhenFull { try db.execute("DELETE FROM content WHERE digest = ?", [.text(digest.description)]) }
    }

    // MARK: Snapshots

    /// Creates a snapshot row; throws ``LazyPullError/Code/alreadyExists`` if `key` is taken.
    public func createSnapshot(key: String, parent: String?, kind: SnapshotKind,
                               labels: [String: String] = [:]) throws -> SnapshotRecord {
        try db.transaction {
            if try !db.query("SELECT 1 FROM snapshots WHERE key = ?", [.text(key)]).isEmpty {
                throw LazyPullError(.alreadyExists, "snapshot \(key) already exists")
            }
            if let parent {
                let p = try db.query("SELECT kind FROM snapshots WHERE key = ?", [.text(parent)])
                guard let kind = p.first?[0].text else {
                    throw LazyPullError(.notFound, "parent snapshot \(parent) not found")
                }
                guard kind == SnapshotKind.committed.rawValue else {
                    throw LazyPullError(.invalidArgument, "parent snapshot \(parent) is not committed")
                }
            }
            let now = Date().timeIntervalSince1970
            try db.execute("""
                INSERT INTO snapshots (key, parent, kind, labels, created, updated) VALUES (?, ?, ?, ?, ?, ?)
                """, [.text(key), parent.map { .text($0) } ?? .null, .text(kind.rawValue),
                      .text(try Self.encode(labels)), .real(now), .real(now)])
            return try snapshotUnlocked(key)!
        }
    }

    public func snapshot(_ key: String) throws -> SnapshotRecord? { try snapshotUnlocked(key) }

    private func snapshotUnlocked(_ key: String) throws -> SnapshotRecord? {
        try db.query("SELECT id, key, parent, kind, labels, created, updated FROM snapshots WHERE key = ?", [.text(key)])
            .first.map(Self.snapshotRecord)
    }

    public func snapshots() throws -> [SnapshotRecord] {
        try db.query("SELECT id, key, parent, kind, labels, created, updated FROM snapshots ORDER BY id").map(Self.snapshotRecord)
    }

    /// Turns active snapshot `key` into committed snapshot `name`, optionally re-parenting
    /// it (layers unpacked in parallel are committed bottom-up afterwards).
    /// `labels`, when given, are merged over the active snapshot's.
    public func commitSnapshot(key: String, as name: String, parent: String?? = nil,
                               labels: [String: String]? = nil) throws {
        try db.transaction {
            if try !db.query("SELECT 1 FROM snapshots WHERE key = ?", [.text(name)]).isEmpty {
                throw LazyPullError(.alreadyExists, "snapshot \(name) already exists")
            }
            if case .some(let newParent) = parent {
                if let newParent, try db.query("SELECT 1 FROM snapshots WHERE key = ? AND kind = ?",
                                               [.text(newParent), .text(SnapshotKind.committed.rawValue)]).isEmpty {
                    throw LazyPullError(.notFound, "parent snapshot \(newParent) not found")
                }
                try db.execute("UPDATE snapshots SET parent = ? WHERE key = ?",
                               [newParent.map { .text($0) } ?? .null, .text(key)])
            }
            let rows = try db.query("SELECT kind FROM snapshots WHERE key = ?", [.text(key)])
            guard let kind = rows.first?[0].text else { throw LazyPullError(.notFound, "snapshot \(key) not found") }
            guard kind == SnapshotKind.active.rawValue else {
                throw LazyPullError(.invalidArgument, "snapshot \(key) is not active")
            }
            if let labels, !labels.isEmpty {
                var merged = try snapshotUnlocked(key)?.labels ?? [:]
                merged.merge(labels) { _, new in new }
                try db.execute("UPDATE snapshots SET labels = ? WHERE key = ?", [.text(try Self.encode(merged)), .text(key)])
            }
            try db.execute("UPDATE snapshots SET key = ?, kind = ?, updated = ? WHERE key = ?",
                           [.text(name), .text(SnapshotKind.committed.rawValue),
                            .real(Date().timeIntervalSince1970), .text(key)])
        }
    }

    /// Replaces the labels of `key` (containerd's Update with a `labels` field path).
    @discardableResult
    public func setSnapshotLabels(_ key: String, _ labels: [String: String]) throws -> SnapshotRecord {
        try db.transaction {
            guard try snapshotUnlocked(key) != nil else { throw LazyPullError(.notFound, "snapshot \(key) not found") }
            try db.execute("UPDATE snapshots SET labels = ?, updated = ? WHERE key = ?",
                           [.text(try Self.encode(labels)), .real(Date().timeIntervalSince1970), .text(key)])
            return try snapshotUnlocked(key)!
        }
    }

    /// Deletes the row of `key`; refuses while other snapshots name it as parent.
    public func deleteSnapshot(_ key: String) throws {
        try reserve.retryingWhenFull { try deleteSnapshotRow(key) }
    }

    private func deleteSnapshotRow(_ key: String) throws {
        try db.transaction {
            if try !db.query("SELECT 1 FROM snapshots WHERE parent = ?", [.text(key)]).isEmpty {
                throw LazyPullError(.busy, "snapshot \(key) has children")
            }
            try db.execute("DELETE FROM snapshots WHERE key = ?", [.text(key)])
        }
    }

    private static func snapshotRecord(_ row: [SQLValue]) throws -> SnapshotRecord {
        SnapshotRecord(id: row[0].integer ?? 0, key: row[1].text ?? "", parent: row[2].text,
                       kind: SnapshotKind(rawValue: row[3].text ?? "") ?? .active,
                       labels: (try? decode([String: String].self, row[4].text ?? "{}")) ?? [:],
                       created: Date(timeIntervalSince1970: row[5].real ?? 0),
                       updated: Date(timeIntervalSince1970: row[6].real ?? 0))
    }

    // MARK: Mounts

    public func putMount(_ mount: MountRecord) throws {
        try db.execute("INSERT OR REPLACE INTO mounts (target, record) VALUES (?, ?)",
                       [.text(mount.target), .text(try Self.encode(mount))])
    }

    public func mount(at target: String) throws -> MountRecord? {
        try db.query("SELECT record FROM mounts WHERE target = ?", [.text(target)]).first
            .flatMap { $0[0].text }.map { try Self.decode(MountRecord.self, $0) }
    }

    public func mounts() throws -> [MountRecord] {
        try db.query("SELECT record FROM mounts ORDER BY target").compactMap { $0[0].text }
            .map { try Self.decode(MountRecord.self, $0) }
    }

    public func deleteMount(at target: String) throws {
        try reserve.retryingWhenFull { try db.execute("DELETE FROM mounts WHERE target = ?", [.text(target)]) }
    }

    // MARK: Coding

    static func encode<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: Data(text.utf8))
    }
}
