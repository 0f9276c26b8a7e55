import ArgumentParser
import Foundation
import LazyPullContent
import LazyPullImages
import LazyPullOCI
import LazyPullService

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
        guard fetchTimeout > 0 else { throw LazyPullError(.invalidArgument, "--fetch-timeout must be at least 1 second") }
        let target = try MountTable.canonicalTarget(directory, create: true)
        if eager {
            let state = try StateRoot(path: try global.root)
            if try state.metadata.mount(at: target) != nil {
                throw LazyPullError(.alreadyExists, "\(target) is already a lazypull mount; run `lazypull umount \(target)` first")
            }
            // Eager pulls run here, with progress bars; only the mount of an image that has
            // lazy layers from an earlier lazy pull needs the control plane (to serve them).
            let options = try pullOptions(registry, quiet: quiet)
            let puller = ImagePuller(state: state)
            let record = try (pull ? nil : puller.localImage(ref, platform: options.platform))
                ?? puller.pull(ref, options: options)
            let lazyLayers = LazyLayers(state: state)
            let hasLazyLayers = try record.chainIDs.contains { chainID in
                try state.metadata.snapshot(chainID.description).flatMap(lazyLayers.spec(of:)) != nil
            }
            if !hasLazyLayers {
                try MountTable(state: state).mount(record, at: target, readOnly: readOnly)
                if !quiet { print("mounted \(record.name) at \(target)") }
                return
            }
        }
        // The root is checked (and made private) here, so a root that cannot be used is this
        // command's one-line error, not a control plane that fails to start.
        _ = try StateRoot(path: try global.root)
        var request = MountRequest(reference: ref.description, target: target)
        request.readOnly = readOnly
        request.pull = pull && !eager
        request.platform = registry.platform
        request.plainHTTP = registry.plainHTTP
        request.insecure = registry.insecure
        request.fetchTimeoutSeconds = fetchTimeout
        request.backgroundFetch = !noBackgroundFetch
        // The control plane does the rest (and checks that DIR is not mounted already).
        let reply = try global.controlClient().call(ControlRequest(.mount, mount: request), start: true) { notice in
            writeStandardError("lazypull: notice: \(notice)\n")
        }
        if !quiet { print("mounted \(reply?.image ?? ref.description) at \(target)\(eager ? "" : " (lazy)")") }
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
        // Through the control plane when one runs (it may end itself afterwards); directly
        // otherwise (an eager mount, or a lazy one whose processes are gone).
        if try global.controlClient().call(ControlRequest(.umount, target: target), start: false) == nil {
            try MountTable(state: try StateRoot(path: try global.root)).unmount(target)
        }
    }
}

/// `lazypull serve`: the control plane (DESIGN §2a) and containerd's proxy snapshotter. It runs
/// as `lazypull-serve`, a program of its own installed next to `lazypull`: the gRPC, NIO and
/// TLS libraries it needs would make every other command start slower (they triple the binary).
public struct ServeCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the control plane: lazy mounts for the CLI, and containerd's snapshotter socket.")

    @OptionGroup var global: GlobalOptions

    @Option(help: "Socket to serve containerd's snapshot API on (default: snapshotter.address in the configuration).")
    var address: String?

    @Flag(name: .customLong("exit-when-idle"),
          help: "End once nothing is mounted, without a snapshotter socket (how `lazypull mount` starts it).")
    var exitWhenIdle = false

    public init() {}

    /// What the serving program needs, from the arguments and the configuration file.
    public struct Settings: Sendable {
        public var root: String
        public var address: String
        public var exitWhenIdle: Bool
        public var fetch: FetchSettings
    }

    public func settings() throws -> Settings {
        let config = try global.configuration()
        return Settings(root: try global.root, address: address ?? config.snapshotter.address, exitWhenIdle: exitWhenIdle,
                        fetch: config.fetchSettings)
    }

    public func run() throws {
        let program = Daemon.serveExecutable
        guard program != Daemon.executable else {
            throw LazyPullError(.io, "lazypull-serve is not installed next to \(Daemon.executable)")
        }
        // The same arguments, to the program that serves.
        let arguments = CommandLine.arguments
        let rest = arguments.firstIndex(of: "serve").map { Array(arguments[($0 + 1)...]) } ?? []
        let argv = ([program, "serve"] + rest).map { strdup($0) } + [nil]
        execv(program, argv)
        throw LazyPullError.io("cannot run", path: program, errno: errno)
    }
}

/// The layer host: the one process that serves every lazy layer's FUSE filesystem.
struct FuseHostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuse-host", abstract: "Serve the FUSE filesystems of lazy layers (started by `serve`).",
        shouldDisplay: false)

    @OptionGroup var global: GlobalOptions

    func run() throws {
        try LayerHost.run(paths: ServicePaths(root: try global.root))
    }
}
