import Foundation

/// FUSE mounts whose server died (the layer host killed or crashed): every access below them
/// answers `ENOTCONN`, and a new mount at the same path would stack on top of the dead one
/// and outlive every unmount. A `stat` of the mountpoint does not tell: the kernel answers it
/// from cached attributes. `statfs(2)` (here through `statvfs(3)`) always asks the server,
/// and fails with `ENOTCONN` once the connection is gone.
public enum DeadMounts {
    /// Most mounts detached at one path (a bound on a loop that could otherwise spin on a
    /// path the kernel keeps reporting).
    static let maximumStacked = 64

    /// Whether `path` is the root of a FUSE mount whose server is gone.
    public static func isDead(_ path: String) -> Bool {
        var info = statvfs()
        while statvfs(path, &info) != 0 {
            if errno == EINTR { continue }
            return errno == ENOTCONN
        }
        return false
    }

    /// Detaches (`MNT_DETACH`) every dead mount stacked at `path`, top first, until what is
    /// left there answers; returns how many went.
    @discardableResult
    public static func detach(at path: String) -> Int {
        var detached = 0
        while detached < maximumStacked && isDead(path) {
            guard umount2(path, Int32(MNT_DETACH)) == 0 else { break }
            detached += 1
        }
        return detached
    }

    /// Detaches every mount stacked at `path`, dead or alive (the last user of a mount is
    /// gone); returns how many went.
    @discardableResult
    public static func detachAll(at path: String) -> Int {
        var detached = 0
        while detached < maximumStacked && umount2(path, Int32(MNT_DETACH)) == 0 { detached += 1 }
        return detached
    }
}
