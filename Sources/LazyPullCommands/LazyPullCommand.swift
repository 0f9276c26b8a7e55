import ArgumentParser
import Foundation
import LazyPullImages
import LazyPullOCI
import LazyPullService

/// `lazypull`: pull container images lazily or eagerly and mount their root filesystems.
public struct LazyPullCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lazypull",
        abstract: "Pull container images and mount their root filesystems.",
        subcommands: [PullCommand.self, MountCommand.self, UmountCommand.self, StatusCommand.self, ImagesCommand.self,
                      RmiCommand.self, PruneCommand.self, ConvertCommand.self, ServeCommand.self,
                      FuseHostCommand.self])

    public init() {}

    /// Runs the command line; errors are printed as one line and exit non-zero.
    public static func main() {
        raiseOpenFileLimit()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as LazyPullError {
            writeStandardError("lazypull: error: \(error.message)\n")
            Foundation.exit(error.exitStatus)
        } catch {
            // Usage errors exit 2, as the README documents (ArgumentParser's own is 64).
            let status = exitCode(for: error)
            guard status == .validationFailure else { exit(withError: error) }
            let message = fullMessage(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            writeStandardError("lazypull: error: \(message.replacingOccurrences(of: "Error: ", with: ""))\n")
            Foundation.exit(2)
        }
    }
}

/// Layers unpack in parallel, each keeping its directories open: lift the soft limit on
/// open files to the hard one.
func raiseOpenFileLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    limit.rlim_cur = min(limit.rlim_max, 1 << 20)
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("root"), help: "Directory holding lazypull's state (default: $LAZYPULL_ROOT, else `root` in the configuration, else /var/lib/lazypull).")
    var rootOption: String?

    @Option(name: .customLong("config"), help: "Configuration file.")
    var configPath = ProcessInfo.processInfo.environment["LAZYPULL_CONFIG"] ?? Configuration.defaultPath

    /// The configuration file's settings: an unreadable or invalid file is an error naming it
    /// and the line, for every command (a missing one is the defaults).
    func configuration() throws -> Configuration { try Configuration.load(configPath) }

    /// The state root: `--root`, else `$LAZYPULL_ROOT`, else the configuration's `root`.
    var root: String {
        get throws {
            let config = try configuration()
            return rootOption ?? ProcessInfo.processInfo.environment["LAZYPULL_ROOT"] ?? config.root ?? StateRoot.defaultPath
        }
    }

    /// The control plane of the root, started with this configuration when none runs.
    func controlClient() throws -> ControlClient { ControlClient(root: try root, configPath: configPath) }
}

/// How to reach the registry.
struct RegistryFlags: ParsableArguments {
    @Option(help: "Platform to pull from a multi-platform image, os/arch[/variant] (default: this host).")
    var platform: String?

    @Flag(name: .customLong("plain-http"), help: "Use plain HTTP for the registry (default for localhost and 127.0.0.0/8).")
    var plainHTTP = false

    @Flag(help: "Skip TLS certificate verification.")
    var insecure = false
}
