import ArgumentParser
import Foundation
import LazyPullImages
import LazyPullOCI

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert", abstract: "Rewrite an image's layers as eStargz and push it to DST.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var registry: RegistryFlags

    @Flag(help: "Convert to eStargz (the only target format of this version).")
    var estargz = false

    @Option(name: .customLong("prefetch-list"), help: "File with one path per line: these files come first and are prefetched at mount.")
    var prefetchList: String?

    @Argument(help: "Source image reference.")
    var source: String

    @Argument(help: "Destination image reference.")
    var destination: String

    func run() throws {
        guard estargz else { throw LazyPullError(.invalidArgument, "choose a target format: --estargz") }
        var prefetch: [String] = []
        if let prefetchList {
            guard let text = try? String(contentsOfFile: prefetchList, encoding: .utf8) else {
                throw LazyPullError(.invalidArgument, "cannot read prefetch list \(prefetchList)")
            }
            prefetch = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        let src = try Reference(parsing: source), dst = try Reference(parsing: destination)
        let scratch = "\(try global.root)/tmp/convert-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let digest = try ImageConverter().convertToEStargz(from: src, to: dst, prefetch: prefetch,
                                                           options: try pullOptions(registry, quiet: true), scratch: scratch)
        print("\(dst) \(digest)")
    }
}
