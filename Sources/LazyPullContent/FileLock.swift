import Foundation
import LazyPullOCI

/// An advisory `flock(2)` lock on a file, released when the value is dropped. Coordinates
/// lazypull processes that share one root.
public final class FileLock {
    private let fd: Int32

    public enum Mode { case shared, exclusive }

    public init(path: String, mode: Mode) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LazyPullError.io("cannot open lock", path: path, errno: errno) }
        while flock(fd, mode == .shared ? LOCK_SH : LOCK_EX) != 0 {
            guard errno == EINTR else {
                let e = errno
                close(fd)
                throw LazyPullError.io("cannot lock", path: path, errno: e)
            }
        }
    }

    deinit { close(fd) }
}
