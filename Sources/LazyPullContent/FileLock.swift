import Foundation
import LazyPullOCI

/// An advisory `flock(2)` lock on a file, released when the value is dropped. Coordinates
/// lazypull processes that share one root.
public final class FileLock: Sendable {
    private let fd: Int32

    public enum Mode { case shared, exclusive }

    /// Waits for the lock.
    public init(path: String, mode: Mode) throws {
        fd = try Self.lock(path, mode: mode, wait: true)!
    }

    private init(fd: Int32) { self.fd = fd }

    /// Takes the lock if nobody else holds it; nil otherwise.
    public static func attempt(path: String, mode: Mode) throws -> FileLock? {
        try lock(path, mode: mode, wait: false).map(FileLock.init(fd:))
    }

    private static func lock(_ path: String, mode: Mode, wait: Bool) throws -> Int32? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LazyPullError.io("cannot open lock", path: path, errno: errno) }
        while flock(fd, (mode == .shared ? LOCK_SH : LOCK_EX) | (wait ? 0 : LOCK_NB)) != 0 {
            let e = errno
            if e == EINTR { continue }
            close(fd)
            if e == EWOULDBLOCK && !wait { return nil }
            throw LazyPullError.io("cannot lock", path: path, errno: e)
        }
        return fd
    }

    deinit { close(fd) }
}
