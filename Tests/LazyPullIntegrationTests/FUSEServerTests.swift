import CLazyPullShims
import Foundation
import LazyPullFUSE
import Testing

/// A tiny fixed tree served through the generic server: root (1) holds `hello.txt` (2),
/// `link` → hello.txt (3) and `dir/` (4), which holds 1000 empty files `f0000`… (inodes 1000…),
/// more than one kernel buffer of listing.
final class FixedTree: FUSEFileSystem, @unchecked Sendable {
    let content = Array("hello from fuse\n".utf8)

    func stat(_ inode: UInt64) throws -> stat {
        var st = Glibc.stat()
        st.st_ino = UInt(inode)
        st.st_nlink = 1
        st.st_mtim = timespec(tv_sec: 1_700_000_000, tv_nsec: 0)
        switch inode {
        case 1, 4: st.st_mode = S_IFDIR | 0o755; st.st_nlink = 2
        case 2: st.st_mode = S_IFREG | 0o644; st.st_size = Int(content.count); st.st_uid = 1000
        case 3: st.st_mode = S_IFLNK | 0o777; st.st_size = 9
        case 1000..<2000: st.st_mode = S_IFREG | 0o600
        default: throw FUSEError(ENOENT)
        }
        return st
    }

    func lookup(parent: UInt64, name: String) throws -> FUSEEntry {
        if parent == 4, name.hasPrefix("f"), let i = UInt64(name.dropFirst()), i < 1000 {
            return FUSEEntry(inode: 1000 + i, attributes: try stat(1000 + i))
        }
        let map: [String: UInt64] = ["hello.txt": 2, "link": 3, "dir": 4]
        guard parent == 1, let inode = map[name] else { throw FUSEError(ENOENT) }
        return FUSEEntry(inode: inode, attributes: try stat(inode))
    }
    func attributes(of inode: UInt64) throws -> Glibc.stat { try stat(inode) }
    func readlink(_ inode: UInt64) throws -> String { guard inode == 3 else { throw FUSEError(EINVAL) }; return "hello.txt" }
    func open(_ inode: UInt64) throws { guard inode == 2 else { throw FUSEError(EISDIR) } }
    func read(_ inode: UInt64, offset: Int64, size: Int) throws -> [UInt8] {
        let start = min(Int(offset), content.count)
        return Array(content[start..<min(content.count, start + size)])
    }
    func directoryEntries(_ inode: UInt64, from start: Int, limit: Int) throws -> [FUSEDirectoryEntry] {
        if inode == 4 {
            return try (start..<min(1000, start + limit)).map { i in
                let name = "f" + String(i + 10000).dropFirst()
                return FUSEDirectoryEntry(name: name, entry: try lookup(parent: 4, name: name))
            }
        }
        guard inode == 1 else { return [] }
        let all = try ["hello.txt", "link", "dir"].map { FUSEDirectoryEntry(name: $0, entry: try lookup(parent: 1, name: $0)) }
        return Array(all.dropFirst(start).prefix(limit))
    }
    func xattr(_ inode: UInt64, name: String) throws -> [UInt8] {
        guard inode == 2, name == "user.color" else { throw FUSEError(ENODATA) }
        return Array("blue".utf8)
    }
    func xattrNames(_ inode: UInt64) throws -> [String] { inode == 2 ? ["user.color"] : [] }
}

@Suite("FUSE server")
struct FUSEServerTests {
    @Test("serves lookups, reads, listings, links and xattrs, and unmounts cleanly")
    func servesFixedTree() throws {
        let tmp = try TemporaryDirectory("fuse")
        let mnt = tmp.path + "/mnt"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let server = FUSEServer(fileSystem: FixedTree(), mountpoint: mnt)
        try server.start()
        defer { server.stop() }
        #expect(try String(contentsOfFile: mnt + "/hello.txt", encoding: .utf8) == "hello from fuse\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: mnt).sorted() == ["dir", "hello.txt", "link"])
        let listing = try FileManager.default.contentsOfDirectory(atPath: mnt + "/dir")
        #expect(listing.count == 1000 && listing.sorted() == (0..<1000).map { "f" + String($0 + 10000).dropFirst() })
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: mnt + "/link") == "hello.txt")
        let attributes = try FileManager.default.attributesOfItem(atPath: mnt + "/hello.txt")
        #expect(attributes[.ownerAccountID] as? Int == 1000)
        var value = [UInt8](repeating: 0, count: 16)
        let n = getxattr(mnt + "/hello.txt", "user.color", &value, value.count)
        #expect(n == 4 && String(decoding: value[..<4], as: UTF8.self) == "blue")
        #expect(getxattr(mnt + "/hello.txt", "user.other", &value, value.count) == -1 && errno == ENODATA)
        #expect(!FileManager.default.fileExists(atPath: mnt + "/missing"))
        server.stop()
        #expect(!isMounted(mnt))
    }
}
