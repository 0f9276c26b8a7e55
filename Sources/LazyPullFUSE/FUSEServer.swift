import CFuse3
import CLazyPullShims
import Foundation
import Synchronization
import LazyPullOCI

/// An errno answer to a FUSE request.
public struct FUSEError: Error, Equatable, Sendable {
    public let errno: Int32
    public init(_ errno: Int32) { self.errno = errno }
}

/// What `lookup` and `readdirplus` return for a name.
public struct FUSEEntry: Sendable {
    public var inode: UInt64
    public var attributes: stat
    public init(inode: UInt64, attributes: stat) {
        self.inode = inode
        self.attributes = attributes
    }
}

/// One name in a directory listing.
public struct FUSEDirectoryEntry: Sendable {
    public var name: String
    public var entry: FUSEEntry
    public init(name: String, entry: FUSEEntry) {
        self.name = name
        self.entry = entry
    }
}

/// A read-only file system served through ``FUSEServer``. Methods are called from several
/// FUSE worker threads at once and may block (a remote read does). Inodes are the file
/// system's own; the root is `FUSE_ROOT_ID` (1). Errors are ``FUSEError``s; anything else
/// becomes EIO.
public protocol FUSEFileSystem: AnyObject, Sendable {
    func lookup(parent: UInt64, name: String) throws -> FUSEEntry
    func attributes(of inode: UInt64) throws -> stat
    func readlink(_ inode: UInt64) throws -> String
    func open(_ inode: UInt64) throws
    func read(_ inode: UInt64, offset: Int64, size: Int) throws -> [UInt8]
    /// Where the bytes of a read are; the server splices them from a file into the reply when
    /// it can. The default answers with ``read(_:offset:size:)``.
    func readData(_ inode: UInt64, offset: Int64, size: Int) throws -> FUSEReadData
    /// Up to `limit` entries of the listing (without "." and "..") from position `start` on;
    /// the server pages through it, one kernel buffer at a time.
    func directoryEntries(_ inode: UInt64, from start: Int, limit: Int) throws -> [FUSEDirectoryEntry]
    func xattr(_ inode: UInt64, name: String) throws -> [UInt8]
    func xattrNames(_ inode: UInt64) throws -> [String]
}

/// The bytes of one read.
public enum FUSEReadData: Sendable {
    case bytes([UInt8])
    /// `length` bytes at `offset` of `descriptor`, which stays open as long as the file system.
    case file(descriptor: Int32, offset: Int64, length: Int)
}

extension FUSEFileSystem {
    public func readData(_ inode: UInt64, offset: Int64, size: Int) throws -> FUSEReadData {
        .bytes(try read(inode, offset: offset, size: size))
    }
}

/// A generic low-level libfuse3 server: mounts a ``FUSEFileSystem`` at a directory and runs
/// libfuse's multi-threaded loop on a thread of its own. Every request is answered exactly
/// once. Layers are immutable, so entries and attributes are cached by the kernel for a long
/// time, files are opened with `keep_cache`, and readdirplus is always on (libfuse 3.14's
/// adaptive mode falls back to one LOOKUP per name).
public final class FUSEServer: @unchecked Sendable {
    public let mountpoint: String
    let fileSystem: FUSEFileSystem
    private var session: OpaquePointer?
    private var loop: Thread?
    private let finished = DispatchSemaphore(value: 0)
    /// Immutable content: the kernel may cache names and attributes for a day.
    static let cacheTimeout: Double = 86_400
    /// Set at INIT when the kernel can open files and directories without asking (the file
    /// system keeps no per-open state): OPEN, RELEASE, OPENDIR and RELEASEDIR are then
    /// answered ENOSYS once, and the kernel stops sending them, keeps page and directory
    /// caches across opens, and saves two round trips per file opened.
    private let statelessOpen = Mutex<(files: Bool, directories: Bool)>((false, false))

    public init(fileSystem: FUSEFileSystem, mountpoint: String) {
        self.fileSystem = fileSystem
        self.mountpoint = mountpoint
    }

    /// Mounts and starts serving. `options` are FUSE mount options.
    public func start(options: [String] = ["ro", "allow_other", "default_permissions", "fsname=lazypull",
                                           "subtype=lazypull"], threads: UInt32 = 16) throws {
        var ops = fuse_lowlevel_ops()
        Self.install(&ops)
        let arguments: [String] = ["lazypull", "-o", options.joined(separator: ",")]
        let argv = arguments.map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var cArgv: [UnsafeMutablePointer<CChar>?] = argv
        let me = Unmanaged.passRetained(self).toOpaque()
        guard let se = lp_fuse_session_new(Int32(argv.count), &cArgv, &ops, me) else {
            Unmanaged<FUSEServer>.fromOpaque(me).release()
            throw LazyPullError(.io, "cannot create FUSE session for \(mountpoint)")
        }
        guard fuse_session_mount(se, mountpoint) == 0 else {
            fuse_session_destroy(se)
            Unmanaged<FUSEServer>.fromOpaque(me).release()
            throw LazyPullError(.io, "cannot mount FUSE at \(mountpoint) (is /dev/fuse available?)")
        }
        session = se
        let seBox = UncheckedSession(se)
        let retained = UncheckedSession(OpaquePointer(me))
        let thread = Thread { [finished] in
            _ = lp_fuse_session_loop_mt(seBox.pointer, threads, threads / 2)
            fuse_session_unmount(seBox.pointer)
            fuse_session_destroy(seBox.pointer)
            Unmanaged<FUSEServer>.fromOpaque(UnsafeRawPointer(retained.pointer)).release()
            finished.signal()
        }
        thread.name = "fuse \(mountpoint)"
        thread.start()
        loop = thread
    }

    /// Unmounts (lazily, so busy mounts detach) and waits for the loop to end.
    public func stop() {
        guard session != nil else { return }
        umount2(mountpoint, Int32(MNT_DETACH))
        finished.wait()
        session = nil
    }

    /// Blocks until the session ends (the mount was unmounted).
    public func wait() {
        guard session != nil else { return }
        finished.wait()
        finished.signal()
    }

    // MARK: Dispatch

    static func server(_ req: fuse_req_t?) -> FUSEServer {
        Unmanaged<FUSEServer>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    /// The errno for a failed request. Anything but a ``FUSEError`` is a failure of the layer
    /// (registry, verification): it is logged and becomes EIO.
    static func code(of error: Error) -> Int32 {
        if let e = error as? FUSEError { return e.errno }
        writeStandardError("lazypull: layer read failed: \(error)\n")
        return EIO
    }

    static func entryParam(_ entry: FUSEEntry) -> fuse_entry_param {
        var p = fuse_entry_param()
        p.ino = entry.inode
        p.generation = 1
        p.attr = entry.attributes
        p.attr_timeout = cacheTimeout
        p.entry_timeout = cacheTimeout
        return p
    }

    static func install(_ ops: inout fuse_lowlevel_ops) {
        ops.`init` = { userdata, conn in
            lp_fuse_conn_configure(conn, 64)
            let bits = lp_fuse_conn_stateless_open(conn)
            let server = Unmanaged<FUSEServer>.fromOpaque(userdata!).takeUnretainedValue()
            server.statelessOpen.withLock { $0 = (bits & 1 != 0, bits & 2 != 0) }
        }
        ops.lookup = { req, parent, name in
            let fs = FUSEServer.server(req).fileSystem
            do {
                var p = FUSEServer.entryParam(try fs.lookup(parent: parent, name: String(cString: name!)))
                fuse_reply_entry(req, &p)
            } catch { fuse_reply_err(req, FUSEServer.code(of: error)) }
        }
        // Inodes live as long as the mount: nothing to release.
        ops.forget = { req, _, _ in fuse_reply_none(req) }
        ops.forget_multi = { req, _, _ in fuse_reply_none(req) }
        ops.getattr = { req, inode, _ in
            do {
                var st = try FUSEServer.server(req).fileSystem.attributes(of: inode)
                fuse_reply_attr(req, &st, FUSEServer.cacheTimeout)
            } catch { fuse_reply_err(req, FUSEServer.code(of: error)) }
        }
        ops.readlink = { req, inode in
            do { fuse_reply_readlink(req, try FUSEServer.server(req).fileSystem.readlink(inode)) }
            catch { fuse_reply_err(req, FUSEServer.code(of: error)) }
        }
        ops.open = { req, inode, fi in
            do {
                let server = FUSEServer.server(req)
                try server.fileSystem.open(inode)
                if server.statelessOpen.withLock({ $0.files }) { fuse_reply_err(req, ENOSYS); return }
                lp_fuse_file_info_keep_cache(fi)
                fuse_reply_open(req, fi)
            } catch { fuse_reply_err(req, FUSEServer.code(of: error)) }
        }
        ops.read = { req, inode, size, offset, _ in
            do {
                switch try FUSEServer.server(req).fileSystem.readData(inode, offset: Int64(offset), size: size) {
                case .bytes(let data):
                    data.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
                case .file(let descriptor, let position, let length):
                    _ = lp_fuse_reply_fd(req, descriptor, off_t(position), length)
                }
            } catch { fuse_reply_err(req, FUSEServer.code(of: error)) }
        }
        ops.release = { req, _, _ in fuse_reply_err(req, 0) }
        ops.opendir = { req, inode, fi in
            do {
                let server = FUSEServer.server(req)
                let st = try server.fileSystem.attributes(of: inode)
                guard st.st_mode & S_IFMT == S_IFDIR else { throw FUSEError(ENOTDIR) }
                if server.statelessOpen.withLock({ $0.directories }) { fuse_reply_err(req, ENOSYS); return }
                lp_fuse_file_info_keep_cache(fi)
                fuse_reply_open(req, fi)
            } catch { fuse_reply_err(req, FUSEServer.code(of: error)) }
        }
        ops.releasedir = { req, _, _ in fuse_reply_err(req, 0) }
        ops.readdir = { req, inode, size, offset, _ in FUSEServer.readdir(req, inode, size, offset, plus: false) }
        ops.readdirplus = { req, inode, size, offset, _ in FUSEServer.readdir(req, inode, size, offset, plus: true) }
        ops.statfs = { req, _ in
            var st = statvfs()
            st.f_bsize = 4096
            st.f_frsize = 4096
            st.f_namemax = 255
            fuse_reply_statfs(req, &st)
        }
        ops.getxattr = { req, inode, name, size in
            do {
                let value = try FUSEServer.server(req).fileSystem.xattr(inode, name: String(cString: name!))
                if size == 0 {
                    fuse_reply_xattr(req, value.count)
                } else if size < value.count {
                    fuse_reply_err(req, ERANGE)
                } else {
                    value.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
                }
            } catch { fuse_reply_err(req, FUSEServer.code(of: error)) }
        }
        ops.listxattr = { req, inode, size in
            do {
                var list: [UInt8] = []
                for name in try FUSEServer.server(req).fileSystem.xattrNames(inode) { list += Array(name.utf8) + [0] }
                if size == 0 {
                    fuse_reply_xattr(req, list.count)
                } else if size < list.count {
                    fuse_reply_err(req, ERANGE)
                } else {
                    list.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
                }
            } catch { fuse_reply_err(req, FUSEServer.code(of: error)) }
        }
    }

    /// Pages through a directory listing: `offset` is the index of the next entry.
    static func readdir(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t, plus: Bool) {
        do {
            // An entry takes more than 24 bytes (fuse_dirent and its name), more than 152 with
            // attributes (fuse_direntplus): ask for no more than the buffer can hold.
            let start = Int(offset)
            let entries = try FUSEServer.server(req).fileSystem.directoryEntries(
                inode, from: start, limit: size / (plus ? 152 : 24) + 1)
            // Not zeroed: the kernel may ask for a buffer of up to max_pages, and only the
            // entries written into it are sent.
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
            defer { buffer.deallocate() }
            var used = 0
            var index = start
            for e in entries {
                let remaining = size - used
                let needed: Int
                if plus {
                    var p = entryParam(e.entry)
                    needed = fuse_add_direntry_plus(req, buffer + used, remaining, e.name, &p, off_t(index + 1))
                } else {
                    var st = e.entry.attributes
                    needed = fuse_add_direntry(req, buffer + used, remaining, e.name, &st, off_t(index + 1))
                }
                if needed > remaining { break }
                used += needed
                index += 1
            }
            fuse_reply_buf(req, buffer, used)
        } catch { fuse_reply_err(req, FUSEServer.code(of: error)) }
    }
}

private struct UncheckedSession: @unchecked Sendable {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
}
