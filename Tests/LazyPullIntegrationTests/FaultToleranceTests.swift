import Foundation
import Testing

/// Issue 13, faults an operator meets: concurrent first mounts, a killed layer host (DESIGN
/// §2a: one control plane and one layer host per state root, and nothing left behind).
@Suite("Process faults: concurrent starts, a killed layer host", .serialized)
struct FaultToleranceTests {
    /// A registry with `small:esgz` (two eStargz layers) and `other:esgz` (one).
    final class Images {
        let tmp: TemporaryDirectory
        let registry: TestRegistry
        let containerd: TestContainerd

        init(_ label: String) throws {
            tmp = try TemporaryDirectory(label)
            registry = try TestRegistry(in: tmp.path)
            try run(["make-small-image.sh", registry.host, "small:v1", "2"])
            try run(["make-small-image.sh", registry.host, "other:v1", "1"])
            containerd = try TestContainerd(in: tmp.path)
            for name in ["small", "other"] {
                try run(["convert-image.sh", containerd.socket, "\(registry.host)/\(name):v1", "\(registry.host)/\(name):esgz", "estargz"])
            }
        }

        func reference(_ name: String) -> String { "\(registry.host)/\(name):esgz" }
    }

    @Test("8 concurrent first mounts into a fresh root: one control plane, one layer host, none after the last umount")
    func concurrentFirstMounts() throws {
        let images = try Images("concurrent")
        let root = images.tmp.path + "/root"
        let targets = (0..<8).map { images.tmp.path + "/m\($0)" }
        defer { for target in targets { _ = try? lazypull(["umount", target], root: root, check: false) } }
        let results = Mutex8()
        let reference = images.reference("small")
        DispatchQueue.concurrentPerform(iterations: targets.count) { i in
            let result = (try? lazypull(["mount", "--read-only", reference, targets[i]], root: root, check: false))
                ?? CommandResult(status: -1, stdout: "", stderr: "not run")
            results.set(i, result)
        }
        for (i, result) in results.all.enumerated() {
            #expect(result.succeeded, "mount \(i): \(result.stderr)")
        }
        #expect(processes(root: root, command: "serve").count == 1, "\(processes(root: root, command: "serve"))")
        #expect(processes(root: root, command: "fuse-host").count == 1, "\(processes(root: root, command: "fuse-host"))")
        for target in targets {
            #expect(try String(contentsOfFile: target + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        }
        for target in targets { try lazypull(["umount", target], root: root) }
        #expect(waitUntilNoProcess(root: root), "lazypull processes still running after the last umount")
        #expect(fuseMountPoints(under: root) == [])

        // A successor started after the idle exit works the same.
        try lazypull(["mount", "--read-only", images.reference("small"), targets[0]], root: root)
        #expect(processes(root: root, command: "serve").count == 1)
        #expect(try String(contentsOfFile: targets[0] + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        try lazypull(["umount", targets[0]], root: root)
        #expect(waitUntilNoProcess(root: root))
    }

    @Test("SIGKILL of the layer host, then mounts again: the dead mounts are detached, none left after the last umount")
    func killedLayerHost() throws {
        let images = try Images("killhost")
        let root = images.tmp.path + "/root"
        let (a, b, c) = (images.tmp.path + "/a", images.tmp.path + "/b", images.tmp.path + "/c")
        defer { for dir in [a, b, c] { _ = try? lazypull(["umount", dir], root: root, check: false) } }
        try lazypull(["mount", "--read-only", images.reference("small"), a], root: root)
        #expect(try String(contentsOfFile: a + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        let hosts = processes(root: root, command: "fuse-host")
        try #require(hosts.count == 1)
        let before = fuseMountPoints(under: root)
        #expect(before.count == 3, "\(before)")

        kill(hosts[0], SIGKILL)
        var gone = false
        for _ in 0..<400 where !gone {
            gone = kill(hosts[0], 0) != 0
            if !gone { Thread.sleep(forTimeInterval: 0.025) }
        }
        try #require(gone)
        // Its mounts are dead now (ENOTCONN), yet still in the mount table.
        #expect(fuseMountPoints(under: root).count == before.count)

        // The same image again (its layers and merged view at the same paths) and another one.
        try lazypull(["mount", "--read-only", images.reference("small"), b], root: root)
        try lazypull(["mount", "--read-only", images.reference("other"), c], root: root)
        #expect(try String(contentsOfFile: b + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        #expect(try String(contentsOfFile: c + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        // Nothing stacked on a dead mount: each mountpoint is mounted once.
        let points = fuseMountPoints(under: root)
        #expect(points.count == Set(points).count, "stacked FUSE mounts: \(points)")
        #expect(processes(root: root, command: "fuse-host").count == 1)

        for dir in [a, b, c] { try lazypull(["umount", dir], root: root) }
        #expect(waitUntilNoProcess(root: root), "lazypull processes still running after the last umount")
        #expect(fuseMountPoints(under: root) == [], "FUSE mounts left: \(fuseMountPoints(under: root))")

        // Killed with nothing mounted after it: the umount alone takes the dead mounts away.
        try lazypull(["mount", "--read-only", images.reference("small"), a], root: root)
        let second = processes(root: root, command: "fuse-host")
        try #require(second.count == 1)
        kill(second[0], SIGKILL)
        for _ in 0..<400 where kill(second[0], 0) == 0 { Thread.sleep(forTimeInterval: 0.025) }
        try lazypull(["umount", a], root: root)
        #expect(waitUntilNoProcess(root: root))
        #expect(fuseMountPoints(under: root) == [], "FUSE mounts left: \(fuseMountPoints(under: root))")
    }
}

/// Results of concurrent commands, by index.
final class Mutex8: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Int: CommandResult] = [:]

    func set(_ i: Int, _ result: CommandResult) { lock.withLock { results[i] = result } }
    var all: [CommandResult] { lock.withLock { results.keys.sorted().compactMap { results[$0] } } }
}

/// Waits (bounded) until no control plane or layer host of `root` runs.
func waitUntilNoProcess(root: String) -> Bool {
    for _ in 0..<400 {
        if processes(root: root, command: "serve").isEmpty && processes(root: root, command: "fuse-host").isEmpty { return true }
        Thread.sleep(forTimeInterval: 0.05)
    }
    return false
}

/// Mount points of FUSE file systems at or below `path`, one entry per mount (a path mounted
/// twice, one on the other, appears twice), from `/proc/self/mountinfo`.
func fuseMountPoints(under path: String) -> [String] {
    let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    return text.split(separator: "\n").compactMap { line -> String? in
        // id parent major:minor root mountpoint options [optional fields] - fstype source super
        let fields = line.split(separator: " ").map(String.init)
        guard fields.count > 5, let separator = fields.firstIndex(of: "-"), separator + 1 < fields.count else { return nil }
        let point = fields[4].replacingOccurrences(of: "\\040", with: " ")
        guard point == path || point.hasPrefix(path + "/"), fields[separator + 1].hasPrefix("fuse") else { return nil }
        return point
    }
}

/// A small ext4 file system on a loop device, mounted at `path`; unmounted and detached when
/// dropped.
final class LoopFileSystem {
    let path: String
    let image: String
    private(set) var device: String?

    init(in parent: String, megabytes: Int) throws {
        image = parent + "/disk.img"
        path = parent + "/disk"
        try run(["truncate", "-s", "\(megabytes)M", image])
        try run(["mkfs.ext4", "-q", "-F", image])
        device = try run(["losetup", "-f", "--show", image]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            try run(["mount", device!, path])
        } catch {
            detach()
            throw error
        }
    }

    /// Fills the file system to the last block (as root, the reserved blocks too) with
    /// `name`, then gives `leaving` bytes back.
    func fill(_ name: String, leaving: Int = 0) throws {
        let file = path + "/" + name
        _ = try run(["dd", "if=/dev/zero", "of=\(file)", "bs=1M", "status=none"], check: false)
        _ = try run(["sync"])
        if leaving > 0 { try run(["truncate", "-s", "-\(leaving)", file]) }
        _ = try run(["sync"])
    }

    private func detach() {
        if let device { _ = try? run(["losetup", "-d", device], check: false) }
        device = nil
    }

    deinit {
        killProcesses(using: path)
        unmountAll(under: path)
        umount2(path, Int32(MNT_DETACH))
        detach()
    }
}

@Suite("Disk full", .serialized)
struct DiskFullTests {
    @Test("an eager pull on a full disk: one line naming ENOSPC and the path, nothing half-made, the retry works; umount on a full disk forgets the mount")
    func eagerPullAndUmount() throws {
        let tmp = try TemporaryDirectory("diskfull")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-small-image.sh", registry.host, "small:v1", "8"])
        let disk = try LoopFileSystem(in: tmp.path, megabytes: 64)
        let root = disk.path + "/root"
        let reference = "\(registry.host)/small:v1"
        try lazypull(["images"], root: root)

        // Room for the first layer, not for the 8 MiB one.
        try disk.fill("filler", leaving: 2 << 20)
        let failed = try lazypull(["pull", "--quiet", reference], root: root, check: false)
        #expect(!failed.succeeded)
        let lines = failed.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(failed.stderr)")
        #expect(failed.stderr.contains("ENOSPC") || failed.stderr.contains("No space left on device"), "\(failed.stderr)")
        #expect(failed.stderr.contains(root), "the error names no path: \(failed.stderr)")
        let snapshots = (try? FileManager.default.contentsOfDirectory(atPath: root + "/snapshots")) ?? []
        #expect(!snapshots.contains { $0 != "locks" }, "half-made snapshots left: \(snapshots)")
        #expect(!(try lazypull(["images"], root: root).stdout.contains("small")))

        // Room again: the same pull works.
        try FileManager.default.removeItem(atPath: disk.path + "/filler")
        try lazypull(["pull", "--quiet", reference], root: root)

        // Mounted (eagerly), then the disk fills: umount still unmounts and forgets it.
        let target = tmp.path + "/mnt"
        try lazypull(["mount", reference, target], root: root)
        defer { _ = try? lazypull(["umount", target], root: root, check: false) }
        #expect(try String(contentsOfFile: target + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        try disk.fill("filler2")
        let unmounted = try lazypull(["umount", target], root: root, check: false)
        #expect(unmounted.succeeded, "\(unmounted.stderr)")
        #expect(!isMountPoint(target))
        let again = try lazypull(["umount", target], root: root, check: false)
        #expect(again.stderr.contains("not mounted by lazypull"), "\(again.stderr)")
        #expect(waitUntilNoProcess(root: root))
    }
}

extension DiskFullTests {
    @Test("the disk fills during a lazy background fetch: the layer host lives, another mount keeps reading, reads needing new data fail with EIO, the log names ENOSPC")
    func lazyBackgroundFetch() throws {
        let tmp = try TemporaryDirectory("diskfull-lazy")
        let registry = try TestRegistry(in: tmp.path)
        let made = try run(["make-small-image.sh", registry.host, "small:v1", "2"]).stdout
        let smallSHA = made.split(separator: "\n").first { $0.hasPrefix("data.bin-sha256 ") }.map { String($0.dropFirst(16)) }
        try run(["make-small-image.sh", registry.host, "big:v1", "24"])
        let containerd = try TestContainerd(in: tmp.path)
        for name in ["small", "big"] {
            try run(["convert-image.sh", containerd.socket, "\(registry.host)/\(name):v1", "\(registry.host)/\(name):esgz", "estargz"])
        }
        let disk = try LoopFileSystem(in: tmp.path, megabytes: 64)
        let root = disk.path + "/root"
        let (small, big) = (tmp.path + "/small", tmp.path + "/big")
        defer { for dir in [small, big] { _ = try? lazypull(["umount", dir], root: root, check: false) } }

        // The small image is fetched whole before the disk fills.
        try lazypull(["mount", "--read-only", "\(registry.host)/small:esgz", small], root: root)
        var fetched = false
        for _ in 0..<600 where !fetched {
            fetched = try statusLayers(root: root, dir: small).allSatisfy { ($0["background"] as? String) == "done" }
            if !fetched { Thread.sleep(forTimeInterval: 0.05) }
        }
        try #require(fetched)
        let hosts = processes(root: root, command: "fuse-host")
        try #require(hosts.count == 1)

        // Room for the big image's mount, not for its 24 MiB of data.
        try disk.fill("filler", leaving: 6 << 20)
        try lazypull(["mount", "--read-only", "\(registry.host)/big:esgz", big], root: root)
        var stopped = false
        for _ in 0..<1200 where !stopped {
            stopped = try statusLayers(root: root, dir: big).contains { ($0["background"] as? String) == "failed" }
            if !stopped { Thread.sleep(forTimeInterval: 0.05) }
        }
        let layers = (try? statusLayers(root: root, dir: big)) ?? []
        #expect(stopped, "the background fetch did not stop: \(layers)")
        #expect(processes(root: root, command: "fuse-host") == hosts, "the layer host died")
        let log = (try? String(contentsOfFile: root + "/run/fuse-host.log", encoding: .utf8)) ?? ""
        #expect(log.contains("No space left on device") || log.contains("ENOSPC"), "\(log.suffix(2000))")
        // The other mount keeps reading what it has; a read of data that cannot be stored fails.
        let sum = try run(["sha256sum", small + "/data.bin"]).stdout.split(separator: " ").first.map(String.init)
        #expect(sum != nil && sum == smallSHA)
        let unread = try run(["timeout", "120", "cat", big + "/data.bin"], check: false)
        #expect(unread.status != 0 && unread.stderr.contains("Input/output error"), "\(unread.status) \(unread.stderr)")
        #expect(processes(root: root, command: "fuse-host") == hosts, "the layer host died")

        try FileManager.default.removeItem(atPath: disk.path + "/filler")
        for dir in [small, big] { try lazypull(["umount", dir], root: root) }
        #expect(waitUntilNoProcess(root: root))
        #expect(fuseMountPoints(under: root) == [])
    }
}

/// Whether `path` is a mount point (in /proc/self/mountinfo).
func isMountPoint(_ path: String) -> Bool {
    let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    return text.split(separator: "\n").contains { line in
        let fields = line.split(separator: " ")
        return fields.count > 4 && fields[4].replacingOccurrences(of: "\\040", with: " ") == path
    }
}
