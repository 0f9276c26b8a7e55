import Foundation
import LazyPullOCI

/// A file of preallocated blocks kept so that a step that frees space can still run on a
/// full disk: when the step fails because the disk is full, the file is removed and the step
/// tried once more. See ``MetadataStore``.
struct DiskReserve: Sendable {
    let path: String
    let bytes: Int64

    /// Whether `error` is SQLite's or the system's "disk full" (SQLITE_FULL, ENOSPC).
    static func isDiskFull(_ error: Error) -> Bool {
        let text = (error as? LazyPullError)?.message ?? "\(error)"
        return text.contains("database or disk is full") || text.contains(String(cString: strerror(ENOSPC)))
    }

    /// Runs `body`; when it fails because the disk is full and the reserve was there, gives
    /// the reserve back and runs `body` once more.
    func retryingWhenFull<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch where Self.isDiskFull(error) {
            guard release() else { throw error }
            return try body()
        }
    }

    /// Removes the reserve; false when there was none.
    func release() -> Bool { unlink(path) == 0 }

    /// Makes the reserve when it is missing and there is room (best effort: without room, or
    /// on a file system that cannot preallocate, there is no reserve).
    func replenish() {
        var st = stat()
        if stat(path, &st) == 0 && Int64(st.st_blocks) >= bytes / 512 { return }
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return }
        let rc = posix_fallocate(fd, 0, off_t(bytes))
        close(fd)
        if rc != 0 { unlink(path) }
    }
}
