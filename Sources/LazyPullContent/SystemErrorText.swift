import Foundation
import LazyPullOCI

/// The cause of a Foundation file-system error in a few words, its errno's text ("Read-only
/// file system", "Not a directory", "No space left on device"), not the `NSCocoaErrorDomain
/// Code=642 …` dump that `localizedDescription` gives on Linux: every error lazypull prints is
/// one line a user can act on.
public func systemErrorText(_ error: Error) -> String {
    let ns = error as NSError
    if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain,
       let code = Int32(exactly: underlying.code) {
        return String(cString: strerror(code))
    }
    if ns.domain == NSPOSIXErrorDomain, let code = Int32(exactly: ns.code) { return String(cString: strerror(code)) }
    guard ns.domain == NSCocoaErrorDomain else { return "\(error)" }
    switch ns.code {
    case NSFileWriteVolumeReadOnlyError: return String(cString: strerror(EROFS))
    case NSFileWriteNoPermissionError, NSFileReadNoPermissionError: return String(cString: strerror(EACCES))
    case NSFileWriteOutOfSpaceError: return String(cString: strerror(ENOSPC))
    case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return String(cString: strerror(ENOENT))
    case NSFileWriteFileExistsError: return String(cString: strerror(EEXIST))
    default: return "file operation failed (code \(ns.code))"
    }
}

/// Creates `path` and its missing parents with mkdir(2) (`mode` for each one made), so a
/// failure is "cannot create <what> <the component>: <errno's text>" ("Not a directory",
/// "Read-only file system"), where FileManager reports only "code 512". An existing
/// directory is fine.
public func createDirectories(_ path: String, mode: mode_t = 0o755, what: String = "directory") throws {
    var st = stat()
    if stat(path, &st) == 0 {
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw LazyPullError.io("cannot create \(what)", path: path, errno: ENOTDIR) }
        return
    }
    var prefix = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        prefix += "/" + component
        if mkdir(prefix, mode) != 0 && errno != EEXIST {
            throw LazyPullError.io("cannot create \(what)", path: prefix, errno: errno)
        }
    }
    guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
        throw LazyPullError.io("cannot create \(what)", path: path, errno: ENOTDIR)
    }
}
