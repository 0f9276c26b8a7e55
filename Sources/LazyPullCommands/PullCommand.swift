import ArgumentParser
import Foundation
import LazyPullImages
import LazyPullOCI

struct PullCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull", abstract: "Pull an image: download, verify and unpack every layer.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var registry: RegistryFlags

    @Flag(help: "Download and unpack every layer now (the only mode of this version).")
    var eager = false

    @Flag(name: .shortAndLong, help: "No progress output.")
    var quiet = false

    @Argument(help: "Image reference, e.g. docker.io/library/debian:bookworm.")
    var reference: String

    func run() throws {
        let ref = try Reference(parsing: reference)
        let state = try StateRoot(path: try global.root)
        let record = try ImagePuller(state: state).pull(ref, options: try pullOptions(registry, quiet: quiet))
        if !quiet {
            print("\(record.name) \(record.target.digest)")
        }
    }
}

func pullOptions(_ flags: RegistryFlags, quiet: Bool) throws -> PullOptions {
    var options = PullOptions()
    if let p = flags.platform { options.platform = try Platform(parsing: p) }
    options.registry.plainHTTP = flags.plainHTTP
    options.registry.http.insecureSkipVerify = flags.insecure
    options.showProgress = PullProgress.wanted(quiet: quiet)
    return options
}
