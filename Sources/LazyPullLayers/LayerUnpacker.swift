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
            guard let name = item.path.last else { continue }
            let display = Self.printable(item.path.joined(separator: "/"))
            let parent = try directory(Array(item.path.dropLast()), create: false, entryName: display)
            try setTimes(dirFD: parent, name: name, mtime: item.mtime, path: display)
        }
        dropDirectoryCache()
    }

    // MARK: Names

    /// The longest entry name or link target, in bytes: 4096 (Linux `PATH_MAX`).
    public static let maxNameLength = 4096
    /// The most components an entry name may have: 1024. Real layers stay below 50; the
    /// bound keeps every walk over an image's tree (here and in the lazy layer tree) short.
    public static let maxPathDepth = 1024

    /// Splits a tar (or TOC) name into clean components. Names are bytes: rejects a NUL
    /// anywhere (C calls would see a shorter name), absolute names and `..` as
    /// ``LazyPullError/Code/hostileLayer``; components over 255 bytes (`NAME_MAX`), names over
    /// ``maxNameLength`` bytes and more than ``maxPathDepth`` components as
    /// ``LazyPullError/Code/invalidLayer``. Empty and `.` components are dropped.
    public static func components(of name: String, entry: String) throws -> [String] {
        // On UTF-8 bytes: splitting on Characters costs more than the rest of a tree build.
        var utf8 = name.utf8[...]
        if utf8.contains(0) {
            throw LazyPullError(.hostileLayer, "layer entry \(quoted(entry)) has a NUL byte in \(quoted(name))")
        }
        if utf8.first == UInt8(ascii: "/") {
            throw LazyPullError(.hostileLayer, "layer entry \(quoted(entry)) has an absolute path")
        }
        if utf8.count > maxNameLength {
            throw LazyPullError(.invalidLayer, "layer entry \(quoted(entry)) has a name longer than \(maxNameLength) bytes")
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
                throw LazyPullError(.hostileLayer, "layer entry \(quoted(entry)) escapes the layer with '..'")
            case 256...:
                throw LazyPullError(.invalidLayer, "layer entry \(quoted(entry)) has a name component longer than 255 bytes")
            default:
                guard parts.count < maxPathDepth else {
                    throw LazyPullError(.invalidLayer, "layer entry \(quoted(entry)) is more than \(maxPathDepth) directories deep")
                }
                parts.append(String(Substring(part)))
            }
        }
        return parts
    }

    /// `text` for a one-line message: control characters (NUL, newlines) escaped, at most
    /// 200 characters.
    static func quoted(_ text: String) -> String { TarReader.quoted(text) }

    /// A NUL-terminated directory entry name as text (invalid UTF-8 repaired), for messages.
    static func text(ofCName name: [CChar]) -> String {
        String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `text` with control characters escaped, for a path in a one-line message.
    static func printable(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f }) else { return text }
        return String(String(reflecting: text).dropFirst().dropLast())
    }

    // MARK: Entries

    private func apply(_ entry: TarEntry, content: TarReader) throws {
        let path = try Self.components(of: entry.name, entry: entry.name)
        let linkPath = entry.type == .hardlink ? try Self.components(of: entry.linkName, entry: entry.name) : []
        // Bound the open descriptors: this entry may open one per component of its parent
        // and of a link target. Only between entries, when none is in use.
        if directories.count + path.count + linkPath.count > Self.maxCachedDirectories { dropDirectoryCache() }
        guard let base = path.last else {
            // The layer root itself ("./") keeps the snapshot directory's own attributes,
            // as containerd's applier does.
            return
        }
        // Names may hold newlines and other control characters: messages stay one line.
        let display = Self.printable(path.joined(separator: "/"))
        let parentPath = Array(path.dropLast())
        let parent = try directory(parentPath, create: true, entryName: display)

        if base.hasPrefix(".wh.") {
            if base == ".wh..wh..opq" {
                try setXattr(dirFD: parent, name: ".", xattr: "trusted.overlay.opaque", value: Array("y".utf8), display: display)
            } else {
                // `base` is one checked component (no '/', no NUL), so is what it hides.
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
            // The target is stored as is (it resolves inside the container), but is bytes too.
            guard !entry.linkName.utf8.contains(0) else {
                throw LazyPullError(.hostileLayer, "layer entry \"\(display)\" is a symlink to "
                                    + "\(Self.quoted(entry.linkName)), which has a NUL byte")
            }
            guard !entry.linkName.isEmpty else {
                throw LazyPullError(.invalidLayer, "layer entry \"\(display)\" is a symlink with an empty target")
            }
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
            guard let targetBase = linkPath.last else {
                throw LazyPullError(.hostileLayer, "layer entry \"\(display)\" is a hardlink to the layer root")
            }
            let targetParent = try directory(Array(linkPath.dropLast()), create: false, entryName: display)
            if linkat(targetParent, targetBase, parent, base, 0) != 0 {
                if errno == EEXIST {
                    try removeExisting(parent: parent, name: base, keepDirectory: false)
                    if linkat(targetParent, targetBase, parent, base, 0) == 0 { break }
                }
                let e = errno
                throw LazyPullError(e == ENOENT ? .invalidLayer : .io,
                                    "cannot link \"\(display)\" to \(Self.quoted(entry.linkName)): \(String(cString: strerror(e)))")
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
    ///
    /// Iterative, whatever the depth (a hostile layer controls it): it holds two descriptors
    /// at most, going down by `openat(O_NOFOLLOW)` and back up through `..`, which must be
    /// the directory it came from (same device and inode), and keeps per level only the
    /// names of the subdirectories still to remove.
    static func removeContents(of fd: Int32) throws {
        /// A directory being emptied below `fd`: its name in its parent, the parent's identity
        /// and the parent's subdirectories still to remove.
        struct Level {
            var name: [CChar]
            var parentDevice: dev_t
            var parentInode: ino_t
            var parentPending: [[CChar]]
        }
        var current = dup(fd)
        guard current >= 0 else { throw LazyPullError.io("cannot read", path: "directory", errno: errno) }
        defer { close(current) }
        var levels: [Level] = []
        var pending = try removeNonDirectories(in: current)
        while true {
            if let sub = pending.popLast() {
                var here = stat()
                guard fstat(current, &here) == 0 else { throw LazyPullError.io("cannot stat", path: "directory", errno: errno) }
                let child = openat(current, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if child < 0 {
                    let e = errno
                    if e == ENOENT { continue }
                    throw LazyPullError.io("cannot open", path: printable(Self.text(ofCName: sub)), errno: e)
                }
                levels.append(Level(name: sub, parentDevice: here.st_dev, parentInode: here.st_ino, parentPending: pending))
                close(current)
                current = child
                pending = try removeNonDirectories(in: current)
            } else {
                guard let level = levels.popLast() else { return }
                let parent = openat(current, "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard parent >= 0 else { throw LazyPullError.io("cannot open", path: "..", errno: errno) }
                var st = stat()
                guard fstat(parent, &st) == 0, st.st_dev == level.parentDevice, st.st_ino == level.parentInode else {
                    close(parent)
                    throw LazyPullError(.io, "directory \(quoted(Self.text(ofCName: level.name))) moved while it was being removed")
                }
                close(current)
                current = parent
                guard unlinkat(current, level.name, AT_REMOVEDIR) == 0 || errno == ENOENT else {
                    throw LazyPullError.io("cannot remove", path: printable(Self.text(ofCName: level.name)), errno: errno)
                }
                pending = level.parentPending
            }
        }
    }

    /// Unlinks everything but directories in the directory `fd`; returns the names of its
    /// subdirectories (as C strings: names on disk are bytes).
    private static func removeNonDirectories(in fd: Int32) throws -> [[CChar]] {
        let dupFD = dup(fd)
        guard dupFD >= 0, let dir = fdopendir(dupFD) else {
            let e = errno
            if dupFD >= 0 { close(dupFD) }
            throw LazyPullError.io("cannot read", path: "directory", errno: e)
        }
        var names: [([CChar], UInt8)] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                Array(raw.prefix { $0 != 0 }.map { CChar(bitPattern: $0) }) + [0]
            }
            if name == [0x2e, 0] || name == [0x2e, 0x2e, 0] { continue }
            names.append((name, e.pointee.d_type))
        }
        closedir(dir)
        var directories: [[CChar]] = []
        for (name, type) in names {
            var isDirectory = type == UInt8(DT_DIR)
            if type == UInt8(DT_UNKNOWN) {
                var st = stat()
                isDirectory = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
            }
            if isDirectory {
                directories.append(name)
            } else if unlinkat(fd, name, 0) != 0 && errno != ENOENT {
                throw LazyPullError.io("cannot remove", path: printable(Self.text(ofCName: name)), errno: errno)
            }
        }
        return directories
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
                    throw LazyPullError.io("cannot create directory", path: "\(rootPath)/\(Self.printable(path[...i].joined(separator: "/")))", errno: errno)
                }
                next = openat(current, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            guard next >= 0 else {
                let e = errno
                let through = Self.printable(path[...i].joined(separator: "/"))
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
            try Self.checkXattrName(x.name, display: display)
            let rc = x.value.withUnsafeBytes { fsetxattr(fd, x.name, $0.baseAddress, $0.count, 0) }
            guard rc == 0 else { throw LazyPullError.io("cannot set xattr \(Self.printable(x.name)) on", path: "\(rootPath)/\(display)", errno: errno) }
        }
        // chown clears setuid/setgid; the umask may have removed bits at creation.
        if chowned || entry.mode & 0o7000 != 0 || mode_t(entry.mode) & Self.umaskBits != 0 {
            guard fchmod(fd, mode_t(entry.mode)) == 0 else {
                throw LazyPullError.io("cannot chmod", path: "\(rootPath)/\(display)", errno: errno)
            }
        }
        var times = Self.timespecs(entry.mtime)
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
        try Self.checkXattrName(xattr, display: display)
        let path = "/proc/self/fd/\(dirFD)/\(name)"
        let rc = value.withUnsafeBytes { lsetxattr(path, xattr, $0.baseAddress, $0.count, 0) }
        guard rc == 0 else { throw LazyPullError.io("cannot set xattr \(Self.printable(xattr)) on", path: "\(rootPath)/\(display)", errno: errno) }
    }

    private func setTimes(dirFD: Int32, name: String, mtime: (Int64, Int32), path: String) throws {
        var times = Self.timespecs(mtime)
        guard utimensat(dirFD, name, &times, AT_SYMLINK_NOFOLLOW) == 0 else {
            throw LazyPullError.io("cannot set times on", path: "\(rootPath)/\(path)", errno: errno)
        }
    }

    /// Access and modification time for `futimens`/`utimensat`. `time_t` is 64-bit on the
    /// platforms lazypull runs on, and the reader keeps nanoseconds in `0 ..< 10^9`.
    static func timespecs(_ mtime: (Int64, Int32)) -> [timespec] {
        let t = timespec(tv_sec: Int(truncatingIfNeeded: mtime.0), tv_nsec: Int(truncatingIfNeeded: mtime.1))
        return [t, t]
    }

    /// An xattr name reaches `setxattr` as a C string: it must not hold a NUL byte (the reader
    /// refuses those already; this keeps the rule where the call is).
    static func checkXattrName(_ name: String, display: String) throws {
        guard !name.isEmpty, !name.utf8.contains(0) else {
            throw LazyPullError(.hostileLayer, "layer entry \"\(display)\" has an xattr name \(quoted(name)), empty or with a NUL byte")
        }
    }
}
