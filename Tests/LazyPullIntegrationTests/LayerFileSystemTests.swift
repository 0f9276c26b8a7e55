import Foundation
import LazyPullFS
import LazyPullFUSE
import LazyPullLayers
import LazyPullOCI
import LazyPullRegistry
import Testing

/// The lazy layer file system against the reference: containerd's unpack of the original
/// image, for layers converted by Debian's ctr-remote.
@Suite("Lazy layer file system", .serialized)
struct LayerFileSystemTests {
    @Test("eStargz and zstd:chunked layers served over FUSE and stacked by overlayfs equal containerd's tree",
          arguments: ["estargz", "zstdchunked"])
    func conformance(converter: String) throws {
        let tmp = try TemporaryDirectory("lazyfs")
        let registry = try TestRegistry(in: tmp.path)
        let original = "\(registry.host)/conformance:v1"
        try run(["make-conformance-image.sh", registry.host, "conformance:v1"])
        let containerd = try TestContainerd(in: tmp.path)
        let reference = try containerd.referenceTree(original, in: tmp.path)
        let converted = "\(registry.host)/conformance:\(converter)"
        try run(["convert-image.sh", containerd.socket, original, converted, converter])

        let client = RegistryClient(reference: try Reference(parsing: converted))
        let image = try client.resolve(platform: .host)
        var servers: [FUSEServer] = []
        defer { servers.forEach { $0.stop() } }
        var lowers: [String] = []
        for (i, layer) in image.manifestValue.layers.enumerated() {
            let located = try LayerTOCReader.locate(layer) { try client.fetchRange(layer.digest, offset: $0, length: $1) }
            let digest = layer.digest
            let fs = try LayerFileSystem(located: located) { try client.fetchRange(digest, offset: $0, length: $1) }
            let dir = tmp.path + "/layers/\(i)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let server = FUSEServer(fileSystem: fs, mountpoint: dir)
            try server.start()
            servers.append(server)
            lowers.insert(dir, at: 0)
        }
        let mnt = tmp.path + "/mnt"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try run(["mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir=" + lowers.joined(separator: ":"), mnt])
        defer { umount2(mnt, Int32(MNT_DETACH)) }
        let tree = try run(["treedump.py", mnt]).stdout
        #expect(tree == reference, "lazy \(converter) tree differs from containerd's:\n\(lineDiff(reference, tree))")
    }
}
