// The layer host as a program of its own: the one long-lived process of a state root that
// serves every lazy layer's FUSE file system (DESIGN §2a). Started by the control plane as
// `lazypull-fuse-host fuse-host --root DIR`; `lazypull fuse-host --root DIR` is the same.
// It links none of the CLI's or the containerd socket's libraries (argument parsing, gRPC,
// NIO, TOML): a smaller binary maps fewer pages into the one process that lives longest.
import Foundation
import LazyPullOCI
import LazyPullService

var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "fuse-host" { arguments.removeFirst() }
guard arguments.count == 2, arguments[0] == "--root" else {
    writeStandardError("usage: lazypull-fuse-host [fuse-host] --root DIR\n")
    exit(2)
}
do {
    try LayerHost.run(paths: ServicePaths(root: arguments[1]))
} catch {
    writeStandardError("lazypull-fuse-host: error: \(error)\n")
    exit(1)
}
