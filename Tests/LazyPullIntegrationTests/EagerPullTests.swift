import Foundation
import Testing

/// The eager pipeline against real parts: Debian's docker-registry on loopback, images built
/// with umoci and pushed with skopeo, containerd's own unpack as the reference.
@Suite("Eager pull", .serialized)
struct EagerPullTests {
    @Test("mount --eager is identical to containerd's unpack of the conformance image")
    func conformance() throws {
        let tmp = try TemporaryDirectory("conformance")
        let registry = try TestRegistry(in: tmp.path)
        let ref = "\(registry.host)/conformance:v1"
        try run(["make-conformance-image.sh", registry.host, "conformance:v1"])
        let root = tmp.path + "/root"
        let mountpoint = tmp.path + "/mnt"

        try lazypull(["mount", "--eager", "--read-only", "--quiet", ref, mountpoint], root: root)
        let ours: String
        do {
            ours = try run(["treedump.py", mountpoint]).stdout
            try lazypull(["umount", mountpoint], root: root)
        }
        let containerd = try TestContainerd(in: tmp.path)
        let reference = try containerd.referenceTree(ref, in: tmp.path)
        #expect(!reference.isEmpty)
        #expect(ours == reference, "tree differs from containerd's:\n\(lineDiff(reference, ours))")

        // The same layers as zstd and as plain tar unpack to the same tree.
        for format in ["zstd", "none"] {
            let variant = "\(registry.host)/conformance:\(format)"
            try run(["recompress-image.sh", ref, variant, format])
            try lazypull(["mount", "--eager", "--read-only", "--quiet", variant, mountpoint], root: root)
            let tree = try run(["treedump.py", mountpoint]).stdout
            try lazypull(["umount", mountpoint], root: root)
            #expect(tree == reference, "\(format) tree differs from containerd's:\n\(lineDiff(reference, tree))")
        }

        // The writable mount keeps its changes in its own upper layer, not in the image.
        try lazypull(["mount", "--eager", "--quiet", ref, mountpoint], root: root)
        try "changed".write(toFile: mountpoint + "/hello.txt", atomically: false, encoding: .utf8)
        try lazypull(["umount", mountpoint], root: root)
        try lazypull(["mount", "--eager", "--read-only", "--quiet", ref, mountpoint], root: root)
        #expect(try String(contentsOfFile: mountpoint + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        try lazypull(["umount", mountpoint], root: root)
        #expect(!isMounted(mountpoint))
    }

    @Test("hostile layers fail clearly and never touch anything outside the layer",
          arguments: ["dotdot", "absolute", "symlink", "hardlink"])
    func hostile(tag: String) throws {
        let tmp = try TemporaryDirectory("hostile")
        let registry = try TestRegistry(in: tmp.path)
        let canaryDir = tmp.path + "/canary"
        try FileManager.default.createDirectory(atPath: canaryDir, withIntermediateDirectories: true)
        try "original".write(toFile: canaryDir + "/canary", atomically: false, encoding: .utf8)
        try run(["make-hostile-images.sh", registry.host, canaryDir])

        let root = tmp.path + "/root"
        let result = try lazypull(["pull", "--quiet", "\(registry.host)/hostile:\(tag)"], root: root, check: false)
        #expect(result.status != 0)
        #expect(result.stderr.hasPrefix("lazypull: error: "))
        #expect(result.stderr.contains("layer entry"), "unclear error: \(result.stderr)")
        #expect(try String(contentsOfFile: canaryDir + "/canary", encoding: .utf8) == "original")
        #expect(try FileManager.default.contentsOfDirectory(atPath: canaryDir) == ["canary"])
        // Nothing half-unpacked is left behind as an image or snapshot.
        #expect(try lazypull(["images"], root: root).stdout.split(separator: "\n").count == 1)
        let snapshots = try FileManager.default.contentsOfDirectory(atPath: root + "/snapshots").filter { $0 != "locks" }
        #expect(snapshots.isEmpty)
    }

    @Test("runc runs a container on a mount --eager rootfs")
    func runcOnEagerMount() throws {
        let tmp = try TemporaryDirectory("runc")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-busybox-image.sh", registry.host, "busybox:v1"])
        let root = tmp.path + "/root"
        let rootfs = tmp.path + "/bundle/rootfs"
        try lazypull(["mount", "--eager", "--quiet", "\(registry.host)/busybox:v1", rootfs], root: root)
        defer { _ = try? lazypull(["umount", rootfs], root: root, check: false) }

        #expect(try runEchoOK(bundle: tmp.path + "/bundle", scratch: tmp.path) == "ok\n")
    }

    @Test("an index with several platforms: --platform picks one, the host is the default")
    func platforms() throws {
        let tmp = try TemporaryDirectory("platforms")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-multiplatform-image.sh", registry.host, "multi:v1"])
        let root = tmp.path + "/root"
        let ref = "\(registry.host)/multi:v1"
        for (platform, expected) in [("linux/arm64", "arm64\n"), (nil, "amd64\n")] {
            let mnt = tmp.path + "/mnt-" + (platform ?? "host").replacingOccurrences(of: "/", with: "-")
            try lazypull(["mount", "--eager", "--read-only", "--quiet"] + (platform.map { ["--platform", $0] } ?? []) + [ref, mnt], root: root)
            defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }
            #expect(try String(contentsOfFile: mnt + "/platform.txt", encoding: .utf8) == expected)
        }
        let missing = try lazypull(["pull", "--quiet", "--platform", "linux/s390x", ref], root: root, check: false)
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("no image for platform linux/s390x"))
    }

    @Test("images, rmi and prune keep the store consistent")
    func imagesRmiPrune() throws {
        let tmp = try TemporaryDirectory("rmi")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-small-image.sh", registry.host, "small:v1", "1"])
        let root = tmp.path + "/root"
        let ref = "\(registry.host)/small:v1"
        try lazypull(["pull", "--quiet", ref], root: root)
        let json = try lazypull(["images", "--json"], root: root).stdout
        let images = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [[String: Any]]
        #expect(images.map { $0["name"] as? String } == [ref])
        #expect(try lazypull(["images"], root: root).stdout.contains(ref))

        try lazypull(["rmi", ref], root: root)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/content/blobs/sha256").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/snapshots").filter { $0 != "locks" }.isEmpty)
        let again = try lazypull(["rmi", ref], root: root, check: false)
        #expect(again.status != 0 && again.stderr.contains("not found"))
        #expect(try lazypull(["prune"], root: root).stdout.contains("removed 0 blobs"))
    }

    @Test("progress bars on a terminal; clean output without one and with --quiet")
    func progressOutput() throws {
        let tmp = try TemporaryDirectory("progress")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-small-image.sh", registry.host, "small:v1", "2"])
        let ref = "\(registry.host)/small:v1"
        // `script` gives the pull a pseudo-terminal.
        let tty = try run(["script", "-qec", "\(Paths.lazypull) pull --root \(tmp.path)/r1 \(ref)", "/dev/null"])
        #expect(tty.stdout.contains("[========================]") && tty.stdout.contains("/s"), "\(tty.stdout)")
        let plain = try lazypull(["pull", ref], root: tmp.path + "/r2")
        #expect(plain.stderr.isEmpty)
        #expect(plain.stdout.hasPrefix(ref + " sha256:"))
        let quiet = try lazypull(["pull", "--quiet", ref], root: tmp.path + "/r3")
        #expect(quiet.stdout.isEmpty && quiet.stderr.isEmpty)
    }

    @Test("two concurrent pulls of one image into one root both succeed")
    func concurrentPulls() throws {
        let tmp = try TemporaryDirectory("concurrent")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-small-image.sh", registry.host, "small:v1", "4"])
        let root = tmp.path + "/root"
        let ref = "\(registry.host)/small:v1"
        let results = ResultBox()
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            let r = try? lazypull(["pull", "--quiet", ref], root: root, check: false)
            results.append(r?.status ?? -1)
        }
        #expect(results.values == [0, 0])
        let mnt = tmp.path + "/mnt"
        try lazypull(["mount", "--eager", "--read-only", "--quiet", ref, mnt], root: root)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }
        #expect(try String(contentsOfFile: mnt + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
    }
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [Int32] = []
    func append(_ v: Int32) { lock.lock(); storage.append(v); lock.unlock() }
    var values: [Int32] { lock.lock(); defer { lock.unlock() }; return storage }
}

func isMounted(_ path: String) -> Bool {
    let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
    return mounts.split(separator: "\n").contains { $0.split(separator: " ").dropFirst().first.map(String.init) == path }
}

/// The lines only one side has, for a readable failure message.
func lineDiff(_ expected: String, _ actual: String) -> String {
    let e = Set(expected.split(separator: "\n")), a = Set(actual.split(separator: "\n"))
    return (e.subtracting(a).sorted().map { "- \($0)" } + a.subtracting(e).sorted().map { "+ \($0)" })
        .prefix(40).joined(separator: "\n")
}
