import ArgumentParser
import Foundation
import LazyPullOCI

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
            FileHandle.standardError.write(Data("lazypull: error: \(error.message)\n".utf8))
            Foundation.exit(error.code == .invalidArgument || error.code == .invalidReference ? 2 : 1)
        } catch {
            exit(withError: error)
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

    func configuration() throws -> Configuration { try Configuration.load(configPath) }

    var root: String {
        rootOption ?? ProcessInfo.processInfo.environment["LAZYPULL_ROOT"]
            ?? (try? configuration().root).flatMap { $0 } ?? "/var/lib/lazypull"
    }
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
