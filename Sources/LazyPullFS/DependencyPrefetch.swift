import Foundation
import LazyPullFUSE
import LazyPullOCI

/// Prefetching what a dynamically linked program will open next (see ``ELFDependencies``):
/// once an ELF file has been fetched whole, its interpreter and libraries are fetched in
/// parallel, in every layer of the image, instead of one round trip after another as the
/// loader opens them.
extension LayerFileSystem {
    /// Called with the dependencies of every ELF file this layer fetched on demand; the layer
    /// host passes them to every layer of the image (``prefetchFiles(_:)``).
    public func onDependencies(_ handler: @escaping @Sendable (ELFDependencies) -> Void) {
        activity.withLock { $0.dependencyHandler = handler }
    }

    /// A file was fetched from its first byte on: if it is a dynamically linked ELF file,
    /// report what it needs (on a thread of its own, the read does not wait).
    func fetchedWhole(_ inode: UInt64) {
        // Several fetchers may share a file (a prefetch and the read that needed it): the last
        // to finish finds every chunk verified, and looks.
        guard let n = try? node(inode), let first = n.chunks.first, n.attributes.st_size >= 64,
              cache.areVerified(n.chunks[...]) else { return }
        guard let handler = activity.withLock({ state -> (@Sendable (ELFDependencies) -> Void)? in
            guard state.dependencyHandler != nil, state.dependenciesSeen.insert(inode).inserted else { return nil }
            return state.dependencyHandler
        }) else { return }
        // Most files fetched are not ELF: look at the magic before starting anything.
        let start = first.dataOffset - first.fileOffset
        var magic = [UInt8](repeating: 0, count: 4)
        guard (try? magic.withUnsafeMutableBytes { try cache.read(at: start, into: $0) }) != nil,
              magic == [0x7F, 0x45, 0x4C, 0x46] else { return }
        let thread = Thread { [self] in
            let started = Date()
            // Mapped: the parser touches a few pages (headers, dynamic section, strings).
            guard let dependencies = cache.withMappedBytes(at: start, count: Int(n.attributes.st_size), ELFDependencies.parse)
            else { return }
            if Self.traceReads { Self.trace("dependencies of inode \(inode): \(dependencies.needed)", since: started) }
            handler(dependencies)
        }
        thread.stackSize = 512 << 10
        thread.start()
    }

    /// Files one call of ``prefetchFiles(_:)`` starts fetching, at most: each is a thread,
    /// and the paths come from an image's ELF headers.
    static let maxPrefetchFiles = 64

    /// Fetches the files at `paths` that this layer holds and has not fetched yet, each on a
    /// thread of its own (at most ``maxPrefetchFiles``); the ones that are ELF files report
    /// their own dependencies in turn.
    public func prefetchFiles(_ paths: [String]) {
        var started = 0
        for path in paths {
            guard started < Self.maxPrefetchFiles else { return }
            guard let inode = resolve(path), let n = try? node(inode), n.attributes.st_mode & S_IFMT == S_IFREG,
                  let head = n.chunks.first, !cache.isPresent(head.index) else { continue }
            started += 1
            let thread = Thread { [self] in
                let started = Date()
                defer { if Self.traceReads { Self.trace("prefetch \(path) chunk at \(head.compressedStart)", since: started) } }
                do {
                    try fetchMissing(Array(Self.chunksAhead(n.chunks, from: 0, through: 0)), yielding: false, groupLimit: .max)
                    fetchedWhole(inode)
                } catch {
                    // A prefetch is a guess: the read that needs the file fetches it again.
                }
            }
            thread.stackSize = 512 << 10
            thread.start()
        }
    }

    /// The inode at absolute `path` in this layer, following symbolic links inside it (at
    /// most 8); nil when the path leaves the layer's tree or does not exist in it.
    func resolve(_ path: String, links: Int = 0) -> UInt64? {
        guard links <= 8 else { return nil }
        var stack: [(name: String, inode: UInt64)] = []
        var components = path.split(separator: "/").map(String.init)[...]
        while let name = components.popFirst() {
            if name == "." { continue }
            if name == ".." { _ = stack.popLast(); continue }
            let parent = stack.last?.inode ?? 1
            guard let child = nodes[Int(parent - 1)].child(name) else { return nil }
            let node = nodes[Int(child - 1)]
            if node.attributes.st_mode & S_IFMT == S_IFLNK {
                let base = node.linkTarget.hasPrefix("/") ? "" : "/" + stack.map(\.name).joined(separator: "/")
                return resolve(base + "/" + node.linkTarget + "/" + components.joined(separator: "/"), links: links + 1)
            }
            stack.append((name, child))
        }
        return stack.last?.inode ?? 1
    }
}
