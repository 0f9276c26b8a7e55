import ArgumentParser
import Foundation
import LazyPullContent
import LazyPullImages
import LazyPullOCI

/// `lazypull status [DIR] [--json]`: per mount and layer, how it is read and how much of it
/// has arrived.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show mounts and, per layer, format, lazy or eager, bytes fetched and background fetch.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    @Argument(help: "A mounted directory (default: every mount).")
    var directory: String?

    struct MountStatus: Codable {
        var target: String
        var image: String
        var layers: [LayerStatus]
    }

    struct LayerStatus: Codable {
        var digest: String
        var format: String
        var mode: String
        var fetchedBytes: Int64
        var totalBytes: Int64
        var background: String
    }

    func run() throws {
        let state = try StateRoot(path: global.root)
        var mounts = try state.metadata.mounts()
        if let directory {
            let target = try MountTable.canonicalTarget(directory, create: false)
            mounts = mounts.filter { $0.target == target }
            guard !mounts.isEmpty else { throw LazyPullError(.notFound, "\(target) is not mounted by lazypull") }
        }
        let report = try mounts.map { try status(of: $0, state: state) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        for mount in report {
            print("\(mount.target)  \(mount.image)")
            for l in mount.layers {
                let percent = l.totalBytes > 0 ? Int(100 * Double(min(l.fetchedBytes, l.totalBytes)) / Double(l.totalBytes)) : 100
                print("  \(l.digest.dropFirst(7).prefix(12))  \(l.format.padding(toLength: 12, withPad: " ", startingAt: 0))"
                      + "\(l.mode.padding(toLength: 6, withPad: " ", startingAt: 0))"
                      + "\(ByteCount.format(l.fetchedBytes))/\(ByteCount.format(l.totalBytes)) (\(percent)%)  background \(l.background)")
            }
        }
    }

    func status(of mount: MountRecord, state: StateRoot) throws -> MountStatus {
        if let id = mount.hostID {
            let path = "\(state.path)/hosts/\(id).status.json"
            let layers = (try? JSONDecoder().decode([LazyLayerStatus].self, from: Data(contentsOf: URL(fileURLWithPath: path)))) ?? []
            // Top layer first, as `docker history` lists them.
            return MountStatus(target: mount.target, image: mount.image, layers: layers.reversed().map {
                LayerStatus(digest: $0.digest.description, format: $0.format.rawValue, mode: "lazy",
                            fetchedBytes: $0.fetchedBytes, totalBytes: $0.totalBytes, background: $0.background.rawValue)
            })
        }
        var layers: [LayerStatus] = []
        if let image = try state.metadata.image(named: mount.image),
           case .manifest(let manifest)? = try? ManifestDocument.decode(try state.content.read(image.manifest), contentType: nil, what: image.name) {
            layers = manifest.layers.reversed().map {
                LayerStatus(digest: $0.digest.description, format: (try? LayerCompression(mediaType: $0.mediaType).rawValue) ?? $0.mediaType,
                            mode: "eager", fetchedBytes: $0.size, totalBytes: $0.size, background: "n/a")
            }
        }
        return MountStatus(target: mount.target, image: mount.image, layers: layers)
    }
}
