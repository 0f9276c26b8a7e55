import ArgumentParser
import Foundation
import LazyPullContent
import LazyPullImages
import LazyPullOCI

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount", abstract: "Pull an image and mount its root filesystem at DIR.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var registry: RegistryFlags

    @Flag(help: "Pull and unpack every layer before mounting (default: read eStargz/zstd:chunked layers lazily).")
    var eager = false

    @Flag(name: .customLong("read-only"), help: "Mount read-only (no writable upper layer).")
    var readOnly = false

    @Option(name: .customLong("fetch-timeout"), help: "Seconds after which a lazy read that cannot be fetched fails with EIO.")
    var fetchTimeout = 30

    @Flag(name: .customLong("no-background-fetch"), help: "Fetch lazy layers only as they are read (after the prefetch).")
    var noBackgroundFetch = false

    @Flag(help: "Pull even when the image is already present locally.")
    var pull = false

    @Flag(name: .shortAndLong, help: "No progress output.")
    var quiet = false

    @Argument(help: "Image reference.")
    var reference: String

    @Argument(help: "Directory to mount the root filesystem at (created if missing).")
    var directory: String

    func run() throws {
        let ref = try Reference(parsing: reference)
        let target = try MountTable.canonicalTarget(directory, create: true)
        let state = try StateRoot(path: global.root)
        if try state.metadata.mount(at: target) != nil {
            throw LazyPullError(.alreadyExists, "\(target) is already a lazypull mount; run `lazypull umount \(target)` first")
        }
        // Like `docker run`: an image already pulled (with all its layers) is used as it is.
        let options = try pullOptions(registry, quiet: quiet)
        if !eager {
            let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            if let record = try LazyMount(state: state).mount(ref, at: target, readOnly: readOnly, options: options,
                                                              fetchTimeoutSeconds: fetchTimeout, backgroundFetch: !noBackgroundFetch,
                                                              executable: executable) {
                if !quiet { print("mounted \(record.name) at \(target) (lazy)") }
                return
            }
            FileHandle.standardError.write(Data("lazypull: notice: \(ref) has layers that cannot be read lazily; pulling it eagerly\n".utf8))
        }
        let record: ImageRecord
        if !pull, let local = try state.metadata.image(named: ref.description),
           let localPlatform = try? Platform(parsing: local.platform),
           PlatformMatcher(options.platform).rank(localPlatform) != nil,
           try local.chainIDs.allSatisfy({ try state.metadata.snapshot($0.description) != nil }) {
            record = local
        } else {
            record = try ImagePuller(state: state).pull(ref, options: options)
        }
        try MountTable(state: state).mount(record, at: target, readOnly: readOnly)
        if !quiet { print("mounted \(record.name) at \(target)") }
    }
}

struct UmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "umount", abstract: "Unmount a directory mounted by `lazypull mount` and drop its writable layer.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The mounted directory.")
    var directory: String

    func run() throws {
        let target = try MountTable.canonicalTarget(directory, create: false)
        try MountTable(state: try StateRoot(path: global.root)).unmount(target)
    }
}

/// The background process serving a lazy mount's FUSE layers (started by `mount`).
struct FuseHostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuse-host", abstract: "Serve the FUSE layers of a lazy mount (internal).", shouldDisplay: false)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The layer host plan written by `lazypull mount`.")
    var plan: String

    func run() throws {
        try LayerHost.serve(planPath: plan)
    }
}
