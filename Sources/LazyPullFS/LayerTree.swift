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

    /// Directories the TOC does not list but its paths go through, at most: each costs an
    /// inode, and a TOC of deep paths through distinct directories would otherwise make
    /// ``TOCValidator/maxPathDepth`` inodes per entry.
    static let maxImplicitDirectories = TOCValidator.maxEntries
    private var implicitDirectories = 0

    /// Adds the entries of a validated TOC, in order (a later entry of a name replaces an
    /// earlier one). Every value is in range already: nothing here converts or adds
    /// input-derived numbers that could trap.
    mutating func build(_ toc: ValidatedTOC, layer: Digest) throws {
        for entry in toc.entries {
            let path = entry.path
            guard let base = path.last else { continue }       // the root entry keeps defaults
            if path.count == 1 && LayerFileSystem.hiddenNames.contains(base) { continue }
            let parent = try directory(path.dropLast(), layer: layer)
            if base == ".wh..wh..opq" {
                nodes[Int(parent - 1)].xattrs.append(("trusted.overlay.opaque", Array("y".utf8)))
                continue
            }
            if base.hasPrefix(".wh.") {
                var st = stat()
                st.st_mode = S_IFCHR
                st.st_rdev = lp_makedev(0, 0)
                st.st_nlink = 1
                st.st_uid = entry.uid
                st.st_gid = entry.gid
                _ = add(Node(attributes: st), named: String(base.dropFirst(4)), in: parent)
                continue
            }
            var st = stat()
            st.st_nlink = 1
            st.st_uid = entry.uid
            st.st_gid = entry.gid
            st.st_mtim = timespec(tv_sec: Int(entry.modificationTime), tv_nsec: 0)
            st.st_atim = st.st_mtim
            st.st_ctim = st.st_mtim
            let permissions = mode_t(entry.permissions)
            var node = Node(attributes: st)
            node.xattrs = entry.xattrs.map { ($0.name, $0.value) }
            switch entry.kind {
            case .directory:
                node.attributes.st_mode = S_IFDIR | permissions
                node.attributes.st_nlink = 2
                if let existing = nodes[Int(parent - 1)].child(base),
                   nodes[Int(existing - 1)].attributes.st_mode & S_IFMT == S_IFDIR {
                    // An implicit parent made earlier: take the entry's attributes, keep children.
                    node.children = nodes[Int(existing - 1)].children
                    node.childPosition = nodes[Int(existing - 1)].childPosition
                    node.xattrs += nodes[Int(existing - 1)].xattrs.filter { $0.name.hasPrefix("trusted.overlay.") }
                    node.attributes.st_nlink = nodes[Int(existing - 1)].attributes.st_nlink
                    node.attributes.st_ino = UInt(existing)
                    nodes[Int(existing - 1)] = node
                    continue
                }
                _ = add(node, named: base, in: parent)
            case .regular:
                node.attributes.st_mode = S_IFREG | permissions
                node.attributes.st_size = Int(entry.size)
                node.attributes.st_blocks = Int(entry.size / 512 + (entry.size % 512 == 0 ? 0 : 1))
                node.chunks = entry.chunks.map {
                    Chunk(fileOffset: $0.fileOffset, size: $0.size, compressedStart: $0.compressedStart,
                          compressedEnd: $0.compressedEnd, innerOffset: $0.innerOffset, digest: $0.digest)
                }
                _ = add(node, named: base, in: parent)
            case .symlink:
                node.attributes.st_mode = S_IFLNK | 0o777
                node.linkTarget = entry.linkTarget
                node.attributes.st_size = node.linkTarget.utf8.count
                _ = add(node, named: base, in: parent)
            case .hardlink:
                guard let inode = lookupPath(entry.hardlinkTarget), nodes[Int(inode - 1)].attributes.st_mode & S_IFMT != S_IFDIR else {
                    throw LazyPullError(.invalidLayer, "layer \(layer): TOC hard link \(TOCValidator.quoted(entry.name)) to missing \(TOCValidator.quoted(entry.hardlinkTarget.joined(separator: "/")))")
                }
                nodes[Int(inode - 1)].attributes.st_nlink += 1
                link(inode, named: base, in: parent)
            case .characterDevice, .blockDevice, .fifo:
                let kind: mode_t = entry.kind == .fifo ? S_IFIFO : (entry.kind == .blockDevice ? S_IFBLK : S_IFCHR)
                node.attributes.st_mode = kind | permissions
                node.attributes.st_rdev = lp_makedev(entry.deviceMajor, entry.deviceMinor)
                _ = add(node, named: base, in: parent)
            }
        }
    }

    /// The directory at `path`, created (0755, root) when the TOC did not list it first.
    private mutating func directory(_ path: ArraySlice<String>, layer: Digest) throws -> UInt64 {
        var current: UInt64 = 1
        for component in path {
            if let child = nodes[Int(current - 1)].child(component) {
                guard nodes[Int(child - 1)].attributes.st_mode & S_IFMT == S_IFDIR else {
                    throw LazyPullError(.hostileLayer, "layer \(layer): TOC entry goes through \(TOCValidator.quoted(component)), which is not a directory")
                }
                current = child
            } else {
                implicitDirectories += 1
                guard implicitDirectories <= Self.maxImplicitDirectories else {
                    throw LazyPullError(.hostileLayer, "layer \(layer): TOC paths go through more than \(Self.maxImplicitDirectories) directories it does not list")
                }
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
            guard let child = nodes[Int(current - 1)].child(component) else { return nil }
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

    /// Points `name` in `parent` at `inode`: a name already there keeps its place in the
    /// listing and gets the new inode (constant time, however many duplicates a TOC has).
    private mutating func link(_ inode: UInt64, named name: String, in parent: UInt64) {
        let p = Int(parent - 1)
        if let position = nodes[p].childPosition[name] {
            nodes[p].children[position].inode = inode
        } else {
            nodes[p].childPosition[name] = nodes[p].children.count
            nodes[p].children.append((name, inode))
        }
    }
}
