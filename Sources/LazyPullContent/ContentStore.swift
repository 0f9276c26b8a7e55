import CLazyPullShims
import Foundation
import LazyPullOCI

/// Verified blobs in containerd's layout: `blobs/sha256/<hex>`, partial downloads under
/// `ingest/<hex>/`. A blob appears under `blobs/` only after its digest was checked, by an
/// atomic rename, so readers never see a partial or wrong blob.
public struct ContentStore: Sendable {
    public let root: String

    public init(root: String) throws {
        self.root = root
        for dir in ["blobs/sha256", "ingest"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(dir)", withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
    }

    public func path(of digest: Digest) -> String { "\(root)/blobs/\(digest.algorithm)/\(digest.encoded)" }

    public func size(of digest: Digest) -> Int64? {
        var st = stat()
        return stat(path(of: digest), &st) == 0 ? Int64(st.st_size) : nil
    }

    public func contains(_ digest: Digest) -> Bool { size(of: digest) != nil }

    public func read(_ digest: Digest) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path(of: digest)) else {
            throw LazyPullError(.notFound, "content \(digest) not found in \(root)")
        }
        return Array(data)
    }

    /// Stores `bytes` under `digest` after checking it.
    public func write(_ bytes: [UInt8], as digest: Digest) throws {
        if contains(digest) { return }
        try digest.verify(Digest.sha256(of: bytes), what: "content to store")
        let temp = "\(root)/ingest/.\(digest.encoded).\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        try Self.writeFile(temp, bytes)
        guard rename(temp, path(of: digest)) == 0 else {
            let e = errno
            unlink(temp)
            throw LazyPullError.io("cannot commit", path: path(of: digest), errno: e)
        }
    }

    /// Writes `bytes` to a new file `path`, 0600; the error names errno (ENOSPC) and the path.
    static func writeFile(_ path: String, _ bytes: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LazyPullError.io("cannot create", path: path, errno: errno) }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let e = n < 0 ? errno : EIO
                unlink(path)
                throw LazyPullError.io("cannot write", path: path, errno: e)
            }
            done += n
        }
    }

    public func delete(_ digest: Digest) throws {
        if unlink(path(of: digest)) != 0 && errno != ENOENT {
            throw LazyPullError.io("cannot delete", path: path(of: digest), errno: errno)
        }
        try? FileManager.default.removeItem(atPath: "\(root)/ingest/\(digest.encoded)")
    }

    public func list() -> [Digest] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "\(root)/blobs/sha256")) ?? []
        return names.compactMap { try? Digest(algorithm: "sha256", encoded: $0) }
    }

    /// Opens (or resumes) the ingest for `digest`. Blocks while another process writes it.
    public func ingest(_ digest: Digest, size: Int64) throws -> Ingest {
        try Ingest(store: self, digest: digest, expectedSize: size)
    }
}

/// A resumable download of one blob. Bytes appended are hashed as they arrive; ``commit()``
/// checks size and digest and moves the blob into place. Not thread-safe: one writer.
public final class Ingest {
    public let digest: Digest
    public let expectedSize: Int64
    /// Bytes already on disk, from this or an earlier interrupted download.
    public private(set) var offset: Int64 = 0
    private let dir: String
    private let dataPath: String
    private let lock: FileLock
    private var fd: Int32
    private let hasher = SHA256Hasher()
    private let store: ContentStore
    /// Bytes appended since writeback was last started.
    private var unflushed = 0
    /// A blob starts its writeback every this many bytes, so that the sync after a pull
    /// finds it mostly on disk already instead of writing it all then.
    static let writebackInterval = 8 << 20

    init(store: ContentStore, digest: Digest, expectedSize: Int64) throws {
        self.store = store
        self.digest = digest
        self.expectedSize = expectedSize
        dir = "\(store.root)/ingest/\(digest.encoded)"
        dataPath = "\(dir)/data"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        lock = try FileLock(path: "\(dir)/lock", mode: .exclusive)
        if store.contains(digest) {
            // Another process finished this blob while we waited for the lock.
            fd = -1
            return
        }
        // Blobs are 0600 (docs/security.md): renamed into blobs/ with this mode.
        fd = open(dataPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LazyPullError.io("cannot open", path: dataPath, errno: errno) }
        let end = lseek(fd, 0, SEEK_END)
        if end > expectedSize { _ = ftruncate(fd, 0); lseek(fd, 0, SEEK_SET) } else { offset = Int64(end) }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Whether another process committed the blob while we waited for the lock.
    public var alreadyCommitted: Bool { store.contains(digest) }

    /// Feeds the bytes of an earlier partial download to `sink` (and the hasher), so a
    /// consumer that streams the blob sees it from byte 0.
    public func replay(_ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard offset > 0 else { return }
        lseek(fd, 0, SEEK_SET)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var remaining = offset
        while remaining > 0 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, Int(min(Int64($0.count), remaining))) }
            guard n > 0 else { throw LazyPullError.io("cannot read", path: dataPath, errno: n < 0 ? errno : EIO) }
            try buffer.withUnsafeBytes { raw in
                let chunk = UnsafeRawBufferPointer(rebasing: raw[..<n])
                hasher.update(chunk)
                try sink(chunk)
            }
            remaining -= Int64(n)
        }
        lseek(fd, 0, SEEK_END)
    }

    public func append(_ chunk: UnsafeRawBufferPointer) throws {
        guard offset + Int64(chunk.count) <= expectedSize else {
            throw LazyPullError(.digestMismatch, "blob \(digest) is longer than its descriptor says (\(expectedSize) bytes)")
        }
        hasher.update(chunk)
        var written = 0
        while written < chunk.count {
            let n = write(fd, chunk.baseAddress! + written, chunk.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                throw LazyPullError.io("cannot write", path: dataPath, errno: errno)
            }
            written += n
        }
        offset += Int64(chunk.count)
        unflushed += chunk.count
        if unflushed >= Self.writebackInterval {
            _ = lp_start_writeback(fd)
            unflushed = 0
        }
    }

    /// Verifies and commits. On mismatch the partial data is deleted and nothing is committed.
    public func commit() throws {
        let actual = hasher.finalize()
        guard offset == expectedSize, actual == digest else {
            discard()
            if offset != expectedSize {
                throw LazyPullError(.digestMismatch, "blob \(digest): got \(offset) bytes, descriptor says \(expectedSize)")
            }
            throw LazyPullError(.digestMismatch, "digest mismatch for blob \(digest): content hashes to \(actual); nothing was stored")
        }
        guard rename(dataPath, store.path(of: digest)) == 0 else {
            throw LazyPullError.io("cannot commit", path: store.path(of: digest), errno: errno)
        }
        close(fd)
        fd = -1
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Throws the partial download away (after a digest mismatch, or on request).
    public func discard() {
        _ = ftruncate(fd, 0)
        offset = 0
        try? FileManager.default.removeItem(atPath: dataPath)
    }
}
