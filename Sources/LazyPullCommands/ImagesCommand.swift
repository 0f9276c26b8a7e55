import ArgumentParser
import Foundation
import LazyPullContent
import LazyPullImages
import LazyPullOCI

struct ImagesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "images", abstract: "List pulled images.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let images = try StateRoot(path: try global.root).metadata.images()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.dateEncodingStrategy = .iso8601
            print(String(decoding: try encoder.encode(images), as: UTF8.self))
            return
        }
        let rows = [["REF", "DIGEST", "PLATFORM", "SIZE", "LAYERS"]] + images.map {
            [$0.name, String($0.target.digest.description.prefix(19)), $0.platform,
             ByteCount.format($0.size), String($0.chainIDs.count)]
        }
        let widths = (0..<rows[0].count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for row in rows {
            print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
    }
}

struct RmiCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rmi", abstract: "Remove images, then the content and snapshots nothing else uses.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Image references.")
    var references: [String]

    func run() throws {
        let state = try StateRoot(path: try global.root)
        for reference in references {
            let name = try Reference(parsing: reference).description
            if try state.metadata.mounts().contains(where: { $0.image == name }) {
                throw LazyPullError(.busy, "\(name) is mounted; run `lazypull umount` first")
            }
            guard try state.metadata.deleteImage(named: name) else {
                throw LazyPullError(.notFound, "image \(name) not found")
            }
            print(name)
        }
        _ = try GarbageCollector(state: state).collect()
    }
}

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune", abstract: "Remove content and snapshots that no image or mount references.")

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let report = try GarbageCollector(state: try StateRoot(path: try global.root)).collect()
        print("removed \(report.blobs) blobs (\(ByteCount.format(report.bytes))) and \(report.snapshots) snapshots")
    }
}
