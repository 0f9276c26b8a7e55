import CLazyPullShims
import Foundation
import LazyPullFUSE
import LazyPullLayers
import LazyPullOCI

/// The inodes of a layer, built from its TOC in overlayfs lower format: whiteouts become 0/0
/// character devices, opaque markers an xattr, hardlinks share an inode, and a later entry
/// replaces an earlier one of the same name, as in a tar stream. Inode N is `nodes[N - 1]`.
struct LayerTree {
    var nodes: [Node]

    init() {
        var root = stat()
        root.st_mode = S_IFDIR | 0o755
        root.st_nlink = 2
        root.st_ino = 1
        nodes = [Node(attributes: root)]
    }

    mutating func build(_ toc: LayerTOC, dataEnd: Int64) throws {
        let offsets = Array(Set(toc.entries.compactMap(\.offset))).sorted()
        func compressedEnd(after start: Int64, explicit: Int64?) -> Int64 {
            if let explicit, explicit > start { return explicit }
            var lo = 0, hi = offsets.count
            while lo < hi { let mid = (lo + hi) / 2; if offsets[mid] <= start { lo = mid + 1 } else { hi = mid } }
            return lo < offsets.count ? offsets[lo] : dataEnd
        }
        var lastFile: UInt64?
        for entry in toc.entries {
            let path = try LayerUnpacker.components(of: entry.name, entry: entry.name)
            if entry.type == "chunk" {
                guard let file = lastFile, let start = entry.offset, let digest = entry.chunkDigest else {
                    throw LazyPullError(.invalidLayer, "TOC chunk entry \"\(entry.name)\" without a file, offset or digest")
                }
                let fileSize = Int64(nodes[Int(file - 1)].attributes.st_size)
                let chunkOffset = entry.chunkOffset ?? 0
                let size = (entry.chunkSize ?? 0) > 0 ? entry.chunkSize! : fileSize - chunkOffset
                nodes[Int(file - 1)].chunks.append(Chunk(
                    fileOffset: chunkOffset, size: size, compressedStart: start,
                    compressedEnd: compressedEnd(after: start, explicit: entry.endOffset),
                    innerOffset: entry.innerOffset ?? 0, digest: try Digest(parsing: digest)))
                continue
            }
            guard let base = path.last else { continue }       // the root entry keeps defaults
            if path.count == 1 && LayerFileSystem.hiddenNames.contains(base) { continue }
            let parent = try directory(Array(path.dropLast()))
            if base == ".wh..wh..opq" {
                nodes[Int(parent - 1)].xattrs.append(("trusted.overlay.opaque", Array("y".utf8)))
                continue
            }
            if base.hasPrefix(".wh.") {
                var st = stat()
                st.st_mode = S_IFCHR
                st.st_rdev = lp_makedev(0, 0)
                st.st_nlink = 1
                st.st_uid = UInt32(entry.uid ?? 0)
                st.st_gid = UInt32(entry.gid ?? 0)
                _ = add(Node(attributes: st), named: String(base.dropFirst(4)), in: parent)
                continue
            }
            var st = stat()
            st.st_nlink = 1
            st.st_uid = UInt32(entry.uid ?? 0)
            st.st_gid = UInt32(entry.gid ?? 0)
            let seconds = try Self.parseTime(entry.modtime)
            st.st_mtim = timespec(tv_sec: Int(seconds), tv_nsec: 0)
            st.st_atim = st.st_mtim
            st.st_ctim = st.st_mtim
            let permissions = mode_t(entry.mode ?? 0) & 0o7777
            var node = Node(attributes: st)
            node.xattrs = try (entry.xattrs ?? [:]).sorted { $0.key < $1.key }.map { name, value in
                guard let bytes = Data(base64Encoded: value) else {
                    throw LazyPullError(.invalidLayer, "TOC entry \"\(entry.name)\": xattr \(name) is not base64")
                }
                return (name, Array(bytes))
            }
            switch entry.type {
            case "dir":
                node.attributes.st_mode = S_IFDIR | permissions
                node.attributes.st_nlink = 2
                if let existing = nodes[Int(parent - 1)].childIndex[base],
                   nodes[Int(existing - 1)].attributes.st_mode & S_IFMT == S_IFDIR {
                    // An implicit parent made earlier: take the entry's attributes, keep children.
                    node.children = nodes[Int(existing - 1)].children
                    node.childIndex = nodes[Int(existing - 1)].childIndex
                    node.xattrs += nodes[Int(existing - 1)].xattrs.filter { $0.name.hasPrefix("trusted.overlay.") }
                    node.attributes.st_ino = UInt(existing)
                    nodes[Int(existing - 1)] = node
                    continue
                }
                _ = add(node, named: base, in: parent)
            case "reg":
                node.attributes.st_mode = S_IFREG | permissions
                let size = entry.size ?? 0
                node.attributes.st_size = Int(size)
                node.attributes.st_blocks = Int((size + 511) / 512)
                if size > 0 {
                    guard let start = entry.offset, let digest = entry.chunkDigest ?? entry.digest else {
                        throw LazyPullError(.invalidLayer, "TOC entry \"\(entry.name)\" has content but no offset or digest")
                    }
                    let chunkSize = (entry.chunkSize ?? 0) > 0 ? entry.chunkSize! : size
                    node.chunks = [Chunk(fileOffset: 0, size: chunkSize, compressedStart: start,
                                         compressedEnd: compressedEnd(after: start, explicit: entry.endOffset),
                                         innerOffset: entry.innerOffset ?? 0, digest: try Digest(parsing: digest))]
                }
                lastFile = add(node, named: base, in: parent)
            case "symlink":
                node.attributes.st_mode = S_IFLNK | 0o777
                node.linkTarget = entry.linkName ?? ""
                node.attributes.st_size = node.linkTarget.utf8.count
                _ = add(node, named: base, in: parent)
            case "hardlink":
                let target = try LayerUnpacker.components(of: entry.linkName ?? "", entry: entry.name)
                guard let inode = lookupPath(target), nodes[Int(inode - 1)].attributes.st_mode & S_IFMT != S_IFDIR else {
                    throw LazyPullError(.invalidLayer, "TOC hardlink \"\(entry.name)\" to missing \"\(entry.linkName ?? "")\"")
                }
                nodes[Int(inode - 1)].attributes.st_nlink += 1
                link(inode, named: base, in: parent)
            case "char", "block", "fifo":
                let kind: mode_t = entry.type == "fifo" ? S_IFIFO : (entry.type == "block" ? S_IFBLK : S_IFCHR)
                node.attributes.st_mode = kind | permissions
                node.attributes.st_rdev = lp_makedev(UInt32(entry.devMajor ?? 0), UInt32(entry.devMinor ?? 0))
                _ = add(node, named: base, in: parent)
            default:
                throw LazyPullError(.invalidLayer, "TOC entry \"\(entry.name)\" has unknown type \"\(entry.type)\"")
            }
        }
    }

    /// The directory at `path`, created (0755, root) when the TOC did not list it first.
    private mutating func directory(_ path: [String]) throws -> UInt64 {
        var current: UInt64 = 1
        for component in path {
            if let child = nodes[Int(current - 1)].childIndex[component] {
                guard nodes[Int(child - 1)].attributes.st_mode & S_IFMT == S_IFDIR else {
                    throw LazyPullError(.hostileLayer, "TOC entry goes through \"\(component)\", which is not a directory")
                }
                current = child
            } else {
                var st = stat()
                st.st_mode = S_IFDIR | 0o755
                st.st_nlink = 2
                current = add(Node(attributes: st), named: component, in: current)
            }
        }
        return current
    }

    private func lookupPath(_ path: [String]) -> UInt64? {
        var current: UInt64 = 1
        for component in path {
            guard let child = nodes[Int(current - 1)].childIndex[component] else { return nil }
            current = child
        }
        return current
    }

    /// Adds a new inode; a name that already exists in the directory is replaced, as a later
    /// tar entry replaces an earlier one.
    private mutating func add(_ node: Node, named name: String, in parent: UInt64) -> UInt64 {
        var node = node
        let inode = UInt64(nodes.count + 1)
        node.attributes.st_ino = UInt(inode)
        nodes.append(node)
        link(inode, named: name, in: parent)
        if node.attributes.st_mode & S_IFMT == S_IFDIR { nodes[Int(parent - 1)].attributes.st_nlink += 1 }
        return inode
    }

    private mutating func link(_ inode: UInt64, named name: String, in parent: UInt64) {
        if nodes[Int(parent - 1)].childIndex[name] != nil {
            nodes[Int(parent - 1)].children.removeAll { $0.name == name }
        }
        nodes[Int(parent - 1)].childIndex[name] = inode
        nodes[Int(parent - 1)].children.append((name, inode))
    }

    /// RFC 3339 times as the TOC writes them (`2006-01-02T15:04:05Z`, maybe with a fraction
    /// or a numeric offset); whole seconds, as the tar headers of these formats carry.
    /// Parsed by hand: a formatter per entry would dominate building a large layer's tree.
    static func parseTime(_ text: String?) throws -> Int64 {
        guard let text, !text.isEmpty else { return 0 }
        let b = Array(text.utf8)
        func number(_ range: Range<Int>) -> Int? {
            guard range.upperBound <= b.count else { return nil }
            var v = 0
            for i in range {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return nil }
                v = v * 10 + Int(b[i] - 0x30)
            }
            return v
        }
        guard b.count >= 20, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: " "),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":"),
              let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
              let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19) else {
            throw LazyPullError(.invalidLayer, "TOC modtime \"\(text)\" is not RFC 3339")
        }
        var i = 19
        if i < b.count && b[i] == UInt8(ascii: ".") {
            i += 1
            while i < b.count && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
        }
        var offset = 0
        if i < b.count && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")),
           let oh = number((i + 1)..<(i + 3)), let om = number((i + 4)..<(i + 6)) {
            offset = (oh * 3600 + om * 60) * (b[i] == UInt8(ascii: "-") ? -1 : 1)
        } else if !(i < b.count && (b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z"))) {
            throw LazyPullError(.invalidLayer, "TOC modtime \"\(text)\" has no time zone")
        }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        return Int64(timegm(&parts)) - Int64(offset)
    }
}
