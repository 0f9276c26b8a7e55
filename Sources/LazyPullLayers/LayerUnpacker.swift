import CLazyPullShims
import Foundation
import LazyPullOCI

/// Unpacks a layer tar into a directory in overlayfs lower format (OCI image spec
/// layer.md "Whiteouts"; Linux overlayfs.rst): `.wh.<name>` becomes a 0/0 character
/// device, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.
///
/// The tar is untrusted: names are cleaned and checked, every parent is opened with
/// `O_NOFOLLOW` relative to the layer directory, so no entry creates or follows anything
/// outside it. A bad entry stops the unpack with ``LazyPullError/Code/hostileLayer``.
/// Nothing is fsynced here; callers sync once at the end.
public final class LayerUnpacker {
    private let rootFD: Int32
    private let rootPath: String
    private var directoryTimes: [(path: [String], mtime: (Int64, Int32))] = []
    /// Open directories of this layer by path, so an entry's parent costs no syscall.
    /// Every fd was opened with `O_NOFOLLOW` one component at a time from the root.
    private var directories: [[String]: Int32] = [:]
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)
    private let ownUID = geteuid(), ownGID = getegid()
    private static let umaskBits: mode_t = {
        let old = umask(0o022)
        umask(old)
        return old
    }()
    static let maxCachedDirectories = 1024
    static let writebackThreshold: Int64 = 256 << 10

    public private(set) var entryCount = 0

    public init(directory: String) throws {
        rootPath = directory
        rootFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else { throw LazyPullError.io("cannot open layer directory", path: directory, errno: errno) }
    }

    deinit {
        dropDirectoryCache()
        close(rootFD)
    }

    /// Applies every entry of `tar`, then directory modification times (children first).
    public func unpack(_ tar: TarReader) throws {
        while let entry = try tar.next() {
            try apply(entry, content: tar)
            entryCount += 1
        }
        for item in directoryTimes.reversed() {
            let parent = try directory(Array(item.path.dropLast()), create: false, entryName: item.path.joined(separator: "/"))
            try setTimes(dirFD: parent, name: item.path.last!, mtime: item.mtime, path: item.path.joined(separator: "/"))
        }
        dropDirectoryCache()
    }

    // MARK: Names

    /// Splits a tar name into clean components; rejects absolute names and `..`.
    public static func components(of name: String, entry: String) throws -> [String] {
        // On UTF-8 bytes: splitting on Characters costs more than the rest of a tree build.
        var utf8 = name.utf8[...]
        if utf8.first == UInt8(ascii: "/") {
            throw LazyPullError(.hostileLayer, "layer entry \"\(entry)\" has an absolute path")
        }
        var parts: [String] = []
        parts.reserveCapacity(8)
        while !utf8.isEmpty {
            let end = utf8.firstIndex(of: UInt8(ascii: "/")) ?? utf8.endIndex
            let part = utf8[..<end]
            utf8 = end == utf8.endIndex ? utf8[end...] : utf8[utf8.index(after: end)...]
            switch part.count {
            case 0: continue
            case 1 where part.first == UInt8(ascii: "."): continue
            case 2 where part.elementsEqual("..".utf8):
                throw LazyPullError(.hostileLayer, "layer entry \"\(entry)\" escapes the layer with '..'")
            case 256...:
                throw LazyPullError(.invalidLayer, "layer entry \"\(entry)\" has a name component longer than 255 bytes")
            default: parts.append(String(Substring(part)))
            }
        }
        return parts
    }

    // MARK: Entries

    private func apply(_ entry: TarEntry, content: TarReader) throws {
        // Bound the open descriptors; only between entries, when none is in use.
        if directories.count >= Self.maxCachedDirectories { dropDirectoryCache() }
        let path = try Self.components(of: entry.name, entry: entry.name)
        guard let base = path.last else {
            // The layer root itself ("./") keeps the snapshot directory's own attributes,
            // as containerd's applier does.
            return
        }
        let display = path.joined(separator: "/")
        let parentPath = Array(path.dropLast())
        let parent = try directory(parentPath, create: true, entryName: display)

        if base.hasPrefix(".wh.") {
            if base == ".wh..wh..opq" {
                try setXattr(dirFD: parent, name: ".", xattr: "trusted.overlay.opaque", value: Array("y".utf8), display: display)
            } else {
                let hidden = String(base.dropFirst(4))
                guard !hidden.isEmpty, hidden != ".", hidden != ".." else {
                    throw LazyPullError(.hostileLayer, "layer entry \"\(display)\" is an invalid whiteout")
                }
                try removeExisting(parent: parent, name: hidden, keepDirectory: false)
                guard mknodat(parent, hidden, S_IFCHR, lp_makedev(0, 0)) == 0 else {
                    throw LazyPullError.io("cannot create whiteout", path: "\(rootPath)/\(display)", errno: errno)
                }
                guard fchownat(parent, hidden, entry.uid, entry.gid, AT_SYMLINK_NOFOLLOW) == 0 else {
                    throw LazyPullError.io("cannot chown", path: "\(rootPath)/\(display)", errno: errno)
                }
            }
            return
        }

        switch entry.type {
        case .directory:
            if mkdirat(parent, base, 0o700) != 0 {
                guard errno == EEXIST else {
                    throw LazyPullError.io("cannot create directory", path: "\(rootPath)/\(display)", errno: errno)
                }
                // An existing directory merges; anything else is replaced.
                if try removeExisting(parent: parent, name: base, keepDirectory: true) {
                    guard mkdirat(parent, base, 0o700) == 0 else {
                        throw LazyPullError.io("cannot create directory", path: "\(rootPath)/\(display)", errno: errno)
                    }
                }
            }
            try setMetadata(dirFD: parent, name: base, entry: entry, display: display)
            directoryTimes.append((path, entry.mtime))
        case .regular:
            // Created with its final permission bits: chmod is then needed only for bits the
            // umask removed or that open(2) cannot set.
            let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
            var fd = openat(parent, base, flags, mode_t(entry.mode & 0o777))
            if fd < 0 && errno == EEXIST {
                try removeExisting(parent: parent, name: base, keepDirectory: false)
                fd = openat(parent, base, flags, mode_t(entry.mode & 0o777))
            }
            guard fd >= 0 else { throw LazyPullError.io("cannot create", path: "\(rootPath)/\(display)", errno: errno) }
            defer { close(fd) }
            try copyContent(of: content, to: fd, display: display)
            // Large files start their writeback now, overlapping the rest of the unpack.
            if entry.size >= Self.writebackThreshold { _ = lp_start_writeback(fd) }
            try setMetadata(fd: fd, entry: entry, display: display)
        case .symlink:
            if symlinkat(entry.linkName, parent, base) != 0 {
                guard errno == EEXIST else {
                    throw LazyPullError.io("cannot create symlink", path: "\(rootPath)/\(display)", errno: errno)
                }
                try removeExisting(parent: parent, name: base, keepDirectory: false)
                guard symlinkat(entry.linkName, parent, base) == 0 else {
                    throw LazyPullError.io("cannot create symlink", path: "\(rootPath)/\(display)", errno: errno)
                }
            }
            try setMetadata(dirFD: parent, name: base, entry: entry, display: display)
        case .hardlink:
            let targetPath = try Self.components(of: entry.linkName, entry: display)
            guard let targetBase = targetPath.last else {
                throw LazyPullError(.hostileLayer, "layer entry \"\(display)\" is a hardlink to the layer root")
            }
            let targetParent = try directory(Array(targetPath.dropLast()), create: false, entryName: display)
            if linkat(targetParent, targetBase, parent, base, 0) != 0 {
                if errno == EEXIST {
                    try removeExisting(parent: parent, name: base, keepDirectory: false)
                    if linkat(targetParent, targetBase, parent, base, 0) == 0 { break }
                }
                let e = errno
                throw LazyPullError(e == ENOENT ? .invalidLayer : .io,
                                    "cannot link \(display) to \(entry.linkName): \(String(cString: strerror(e)))")
            }
        case .characterDevice, .blockDevice, .fifo:
            try removeExisting(parent: parent, name: base, keepDirectory: false)
            let kind: mode_t = entry.type == .fifo ? S_IFIFO : (entry.type == .blockDevice ? S_IFBLK : S_IFCHR)
            guard mknodat(parent, base, kind | 0o600, lp_makedev(entry.deviceMajor, entry.deviceMinor)) == 0 else {
                throw LazyPullError.io("cannot create device", path: "\(rootPath)/\(display)", errno: errno)
            }
            try setMetadata(dirFD: parent, name: base, entry: entry, display: display)
        }
    }

    private func copyContent(of tar: TarReader, to fd: Int32, display: String) throws {
        try buffer.withUnsafeMutableBytes { raw in
            while true {
                let n = try tar.readContent(into: raw)
                if n == 0 { return }
                var written = 0
                while written < n {
                    let w = write(fd, raw.baseAddress! + written, n - written)
                    if w < 0 {
                        if errno == EINTR { continue }
                        throw LazyPullError.io("cannot write", path: "\(rootPath)/\(display)", errno: errno)
                    }
                    written += w
                }
            }
        }
    }

    /// Removes what a new entry replaces. Two directories merge instead. Returns whether
    /// something was removed.
    @discardableResult
    private func removeExisting(parent: Int32, name: String, keepDirectory: Bool) throws -> Bool {
        var st = stat()
        guard fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return false }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            if keepDirectory { return false }
            let fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw LazyPullError.io("cannot open", path: name, errno: errno) }
            try Self.removeContents(of: fd)
            close(fd)
            // Cached descriptors may point into the removed tree.
            let keep = directories.first { $0.value == parent }
            dropDirectoryCache(except: keep?.key)
            guard unlinkat(parent, name, AT_REMOVEDIR) == 0 else { throw LazyPullError.io("cannot remove", path: name, errno: errno) }
        } else if unlinkat(parent, name, 0) != 0 {
            throw LazyPullError.io("cannot remove", path: name, errno: errno)
        }
        return true
    }

    /// Deletes everything inside the directory `fd` without following symlinks.
    static func removeContents(of fd: Int32) throws {
        let dupFD = dup(fd)
        guard let dir = fdopendir(dupFD) else { close(dupFD); throw LazyPullError.io("cannot read", path: "directory", errno: errno) }
        defer { closedir(dir) }
        var names: [(String, Bool)] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name == "." || name == ".." { continue }
            names.append((name, e.pointee.d_type == UInt8(DT_DIR)))
        }
        for (name, isDir) in names {
            if isDir {
                let child = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if child >= 0 { try removeContents(of: child); close(child) }
                unlinkat(fd, name, AT_REMOVEDIR)
            } else {
                unlinkat(fd, name, 0)
            }
        }
    }

    // MARK: Parents

    /// The directory at `path` (relative to the layer root), opened one component at a time
    /// with `O_NOFOLLOW` from the nearest cached ancestor, so a symlink planted by an earlier
    /// entry can never redirect a later one. Missing parents are created 0755, as containerd
    /// does, when `create` is set. The descriptor belongs to the cache.
    private func directory(_ path: [String], create: Bool, entryName: String) throws -> Int32 {
        if path.isEmpty { return rootFD }
        if let fd = directories[path] { return fd }
        var depth = path.count - 1
        while depth > 0 && directories[Array(path[..<depth])] == nil { depth -= 1 }
        var current = depth == 0 ? rootFD : directories[Array(path[..<depth])]!
        for i in depth..<path.count {
            let component = path[i]
            var next = openat(current, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0 && errno == ENOENT && create {
                if mkdirat(current, component, 0o755) != 0 && errno != EEXIST {
                    throw LazyPullError.io("cannot create directory", path: "\(rootPath)/\(path[...i].joined(separator: "/"))", errno: errno)
                }
                next = openat(current, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            guard next >= 0 else {
                let e = errno
                let through = path[...i].joined(separator: "/")
                if e == ELOOP || e == ENOTDIR {
                    throw LazyPullError(.hostileLayer, "layer entry \"\(entryName)\" goes through \"\(through)\", which is not a directory (symlink?)")
                }
                throw LazyPullError(e == ENOENT ? .invalidLayer : .io,
                                    "layer entry \"\(entryName)\": cannot open \"\(through)\": \(String(cString: strerror(e)))")
            }
            directories[Array(path[...i])] = next
            current = next
        }
        return current
    }

    private func dropDirectoryCache(except kept: [String]? = nil) {
        for (path, fd) in directories where path != kept { close(fd) }
        directories = kept.flatMap { k in directories[k].map { [k: $0] } } ?? [:]
    }

    // MARK: Metadata

    /// Owner first (chown clears setuid bits and capabilities), then xattrs, mode, times.
    private func setMetadata(fd: Int32, entry: TarEntry, display: String) throws {
        let chowned = entry.uid != ownUID || entry.gid != ownGID
        if chowned {
            guard fchown(fd, entry.uid, entry.gid) == 0 else {
                throw LazyPullError.io("cannot chown", path: "\(rootPath)/\(display)", errno: errno)
            }
        }
        for x in entry.xattrs {
            let rc = x.value.withUnsafeBytes { fsetxattr(fd, x.name, $0.baseAddress, $0.count, 0) }
            guard rc == 0 else { throw LazyPullError.io("cannot set xattr \(x.name) on", path: "\(rootPath)/\(display)", errno: errno) }
        }
        // chown clears setuid/setgid; the umask may have removed bits at creation.
        if chowned || entry.mode & 0o7000 != 0 || mode_t(entry.mode) & Self.umaskBits != 0 {
            guard fchmod(fd, mode_t(entry.mode)) == 0 else {
                throw LazyPullError.io("cannot chmod", path: "\(rootPath)/\(display)", errno: errno)
            }
        }
        var times = [timespec(tv_sec: Int(entry.mtime.seconds), tv_nsec: Int(entry.mtime.nanoseconds)),
                     timespec(tv_sec: Int(entry.mtime.seconds), tv_nsec: Int(entry.mtime.nanoseconds))]
        guard futimens(fd, &times) == 0 else {
            throw LazyPullError.io("cannot set times on", path: "\(rootPath)/\(display)", errno: errno)
        }
    }

    /// Metadata for entries that cannot be opened for writing (directories, symlinks,
    /// devices, fifos), addressed as `name` in the directory `dirFD`.
    private func setMetadata(dirFD: Int32, name: String, entry: TarEntry, display: String) throws {
        guard fchownat(dirFD, name, entry.uid, entry.gid, AT_SYMLINK_NOFOLLOW) == 0 else {
            throw LazyPullError.io("cannot chown", path: "\(rootPath)/\(display)", errno: errno)
        }
        for x in entry.xattrs {
            try setXattr(dirFD: dirFD, name: name, xattr: x.name, value: x.value, display: display)
        }
        if entry.type != .symlink {
            guard fchmodat(dirFD, name, mode_t(entry.mode), 0) == 0 else {
                throw LazyPullError.io("cannot chmod", path: "\(rootPath)/\(display)", errno: errno)
            }
        }
        if entry.type != .directory {
            try setTimes(dirFD: dirFD, name: name, mtime: entry.mtime, path: display)
        }
    }

    private func setXattr(dirFD: Int32, name: String, xattr: String, value: [UInt8], display: String) throws {
        // /proc/self/fd/N/name resolves within the already-opened, already-checked directory.
        let path = "/proc/self/fd/\(dirFD)/\(name)"
        let rc = value.withUnsafeBytes { lsetxattr(path, xattr, $0.baseAddress, $0.count, 0) }
        guard rc == 0 else { throw LazyPullError.io("cannot set xattr \(xattr) on", path: "\(rootPath)/\(display)", errno: errno) }
    }

    private func setTimes(dirFD: Int32, name: String, mtime: (Int64, Int32), path: String) throws {
        var times = [timespec(tv_sec: Int(mtime.0), tv_nsec: Int(mtime.1)),
                     timespec(tv_sec: Int(mtime.0), tv_nsec: Int(mtime.1))]
        guard utimensat(dirFD, name, &times, AT_SYMLINK_NOFOLLOW) == 0 else {
            throw LazyPullError.io("cannot set times on", path: "\(rootPath)/\(path)", errno: errno)
        }
    }
}
