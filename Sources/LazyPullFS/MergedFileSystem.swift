import CLazyPullShims
import Foundation
import LazyPullFUSE

/// Several lazy layers of one image seen as one tree, with overlayfs's rules applied the way
/// a stack of the layers would show them (Linux Documentation/filesystems/overlayfs.rst:
/// whiteouts hide names below, opaque directories hide everything below, a directory above a
/// directory merges, anything else above replaces). A mount that stacks the layer file
/// systems makes overlayfs look every name up in each layer that has the directory, and most
/// of those lookups find nothing; one merged lower answers each name once. Contents and
/// metadata still come from the layer that holds the entry.
public final class MergedFileSystem: FUSEFileSystem, @unchecked Sendable {
    struct MergedNode {
        /// The layer that holds this entry (the topmost, for a directory) and its inode there.
        var layer: Int
        var inode: UInt64
        var children: [(name: String, inode: UInt64)] = []
        var childIndex: [String: UInt64] = [:]
    }

    let layers: [LayerFileSystem]
    private var nodes: [MergedNode] = []          // index = inode - 1; immutable after init
    private let hasExtendedAttributes: Bool

    static let opaqueAttribute = "trusted.overlay.opaque"

    /// `layers` bottom first, as the image's manifest lists them.
    public init(layers: [LayerFileSystem]) {
        self.layers = layers
        var builder = Builder(layers: layers)
        for (index, layer) in layers.enumerated() { builder.merge(layer: index, of: layer) }
        nodes = builder.finish()
        hasExtendedAttributes = layers.contains { layer in
            layer.nodes.contains { $0.xattrs.contains { $0.name != Self.opaqueAttribute } }
        }
    }

    /// Builds the merged tree with a work list, not recursion: an image decides how deep its
    /// trees are. Directories are listed in slots with a position per name while building, so
    /// replacing or removing a name costs the same however many a directory has.
    private struct Builder {
        let layers: [LayerFileSystem]
        var nodes: [MergedNode]
        /// Per merged directory: its entries (nil: removed) and where each name is.
        var slots: [[(name: String, inode: UInt64)?]]
        var positions: [[String: Int]]
        /// Hard links inside one layer stay one inode.
        var byLayerInode: [Int: [UInt64: UInt64]] = [:]

        init(layers: [LayerFileSystem]) {
            self.layers = layers
            nodes = [MergedNode(layer: 0, inode: 1)]
            slots = [[]]
            positions = [[:]]
        }

        mutating func add(_ node: MergedNode) -> UInt64 {
            nodes.append(node)
            slots.append([])
            positions.append([:])
            return UInt64(nodes.count)
        }

        func isDirectory(_ merged: UInt64) -> Bool {
            let node = nodes[Int(merged - 1)]
            return layers[node.layer].nodes[Int(node.inode - 1)].attributes.st_mode & S_IFMT == S_IFDIR
        }

        /// Applies layer `index` onto the merged tree, from its root down.
        mutating func merge(layer index: Int, of layer: LayerFileSystem) {
            var work: [(inode: UInt64, target: UInt64)] = [(1, 1)]
            while let (inode, target) = work.popLast() {
                mergeDirectory(layer: index, inode: inode, into: target, of: layer, work: &work)
            }
        }

        /// Applies directory `inode` of layer `index` onto merged directory `target`; the
        /// directories below it that merge go onto `work`.
        mutating func mergeDirectory(layer index: Int, inode: UInt64, into target: UInt64, of layer: LayerFileSystem,
                                     work: inout [(inode: UInt64, target: UInt64)]) {
            let source = layer.nodes[Int(inode - 1)]
            let t = Int(target - 1)
            nodes[t].layer = index
            nodes[t].inode = inode
            if target != 1, source.xattrs.contains(where: { $0.name == MergedFileSystem.opaqueAttribute && $0.value == Array("y".utf8) }) {
                slots[t] = []
                positions[t] = [:]
            }
            for child in source.children {
                let node = layer.nodes[Int(child.inode - 1)]
                let type = node.attributes.st_mode & S_IFMT
                if type == S_IFCHR && node.attributes.st_rdev == 0 {
                    remove(child.name, from: target)
                    continue
                }
                if type == S_IFDIR {
                    if let existing = lookup(child.name, in: target), isDirectory(existing) {
                        work.append((child.inode, existing))
                    } else {
                        let created = add(MergedNode(layer: index, inode: child.inode))
                        set(child.name, to: created, in: target)
                        work.append((child.inode, created))
                    }
                } else {
                    let merged: UInt64
                    if let known = byLayerInode[index]?[child.inode] {
                        merged = known
                    } else {
                        merged = add(MergedNode(layer: index, inode: child.inode))
                        byLayerInode[index, default: [:]][child.inode] = merged
                    }
                    set(child.name, to: merged, in: target)
                }
            }
        }

        func lookup(_ name: String, in directory: UInt64) -> UInt64? {
            let d = Int(directory - 1)
            return positions[d][name].flatMap { slots[d][$0]?.inode }
        }

        mutating func set(_ name: String, to inode: UInt64, in directory: UInt64) {
            let d = Int(directory - 1)
            if let position = positions[d][name] {
                slots[d][position] = (name, inode)
            } else {
                positions[d][name] = slots[d].count
                slots[d].append((name, inode))
            }
        }

        mutating func remove(_ name: String, from directory: UInt64) {
            let d = Int(directory - 1)
            guard let position = positions[d].removeValue(forKey: name) else { return }
            slots[d][position] = nil
        }

        /// The nodes with their listings: what was removed dropped, the rest in order.
        mutating func finish() -> [MergedNode] {
            for d in nodes.indices where !slots[d].isEmpty {
                let children = slots[d].compactMap { $0 }
                nodes[d].children = children
                nodes[d].childIndex = Dictionary(children.map { ($0.name, $0.inode) }, uniquingKeysWith: { $1 })
            }
            slots = []
            positions = []
            return nodes
        }
    }

    private func node(_ inode: UInt64) throws -> MergedNode {
        guard inode >= 1, inode <= UInt64(nodes.count) else { throw FUSEError(ENOENT) }
        return nodes[Int(inode - 1)]
    }

    private func stored(_ inode: UInt64) throws -> (layer: LayerFileSystem, inode: UInt64) {
        let n = try node(inode)
        return (layers[n.layer], n.inode)
    }

    // MARK: FUSEFileSystem

    public func lookup(parent: UInt64, name: String) throws -> FUSEEntry {
        guard let inode = try node(parent).childIndex[name] else { throw FUSEError(ENOENT) }
        return FUSEEntry(inode: inode, attributes: try attributes(of: inode))
    }

    public func attributes(of inode: UInt64) throws -> stat {
        let (layer, stored) = try stored(inode)
        var attributes = try layer.attributes(of: stored)
        attributes.st_ino = ino_t(inode)
        return attributes
    }

    public func readlink(_ inode: UInt64) throws -> String {
        let (layer, stored) = try stored(inode)
        return try layer.readlink(stored)
    }

    public func open(_ inode: UInt64) throws {
        let (layer, stored) = try stored(inode)
        try layer.open(stored)
    }

    public func read(_ inode: UInt64, offset: Int64, size: Int) throws -> [UInt8] {
        let (layer, stored) = try stored(inode)
        return try layer.read(stored, offset: offset, size: size)
    }

    public func readData(_ inode: UInt64, offset: Int64, size: Int) throws -> FUSEReadData {
        let (layer, stored) = try stored(inode)
        return try layer.readData(stored, offset: offset, size: size)
    }

    public func directoryEntries(_ inode: UInt64, from start: Int, limit: Int) throws -> [FUSEDirectoryEntry] {
        let children = try node(inode).children
        // The offset comes from the directory's file position: anything a process seeks to.
        guard start >= 0, start < children.count, limit > 0 else { return [] }
        return try children[start..<(start + min(limit, children.count - start))].map {
            FUSEDirectoryEntry(name: $0.name, entry: FUSEEntry(inode: $0.inode, attributes: try attributes(of: $0.inode)))
        }
    }

    /// The opaque markers were applied: they are not part of the merged tree.
    public func xattr(_ inode: UInt64, name: String) throws -> [UInt8] {
        guard hasExtendedAttributes else { throw FUSEError(ENOSYS) }
        guard name != Self.opaqueAttribute else { throw FUSEError(ENODATA) }
        let (layer, stored) = try stored(inode)
        do {
            return try layer.xattr(stored, name: name)
        } catch let error as FUSEError where error.errno == ENOSYS {
            // That layer has no attributes at all; the merged tree has some.
            throw FUSEError(ENODATA)
        }
    }

    public func xattrNames(_ inode: UInt64) throws -> [String] {
        let (layer, stored) = try stored(inode)
        return try layer.xattrNames(stored).filter { $0 != Self.opaqueAttribute }
    }
}
