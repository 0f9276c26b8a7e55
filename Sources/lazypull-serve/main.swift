// `lazypull serve` as a program of its own (`lazypull serve` runs it): the control plane, and
// containerd's snapshotter socket. It alone links gRPC, NIO and their TLS libraries.
import Foundation
import LazyPullCommands
import LazyPullContainerd
import LazyPullImages
import LazyPullOCI
import LazyPullService

var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "serve" { arguments.removeFirst() }
do {
    let settings = try ServeCommand.parse(arguments).settings()
    let state = try StateRoot(path: settings.root)
    let plane = ControlPlane(state: state, exitWhenIdle: settings.exitWhenIdle, settings: settings.fetch)
    guard !settings.exitWhenIdle else { try plane.run() }
    let snapshotter = ContainerdSnapshotter(state: state, host: plane.host, settings: settings.fetch)
    let server = SnapshotterServer(socketPath: settings.address, snapshotter: snapshotter)
    // containerd may create containers on any remote layer as soon as the socket answers.
    try plane.run {
        snapshotter.restore()
        try server.start()
        serviceLog("containerd snapshotter serving \(server.socketPath)")
    }
} catch let error as LazyPullError {
    writeStandardError("lazypull: error: \(error.message)\n")
    exit(error.code == .invalidArgument || error.code == .invalidReference ? 2 : 1)
} catch {
    ServeCommand.exit(withError: error)
}
