import ArgumentParser
import Foundation
import LazyPullContent
import LazyPullImages
import LazyPullOCI
import LazyPullService

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

    func run() throws {
        let target = try directory.map { try MountTable.canonicalTarget($0, create: false) }
        let report: [MountStatus]
        if let reply = try global.controlClient().call(ControlRequest(.status, target: target), start: false) {
            report = reply.status ?? []
        } else {
            // Nothing serves lazy layers: report from local state.
            report = try MountStatusReport(state: try StateRoot(path: try global.root)).build(target: target, served: [])
        }
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
}
