import Foundation
import Testing

/// DESIGN §2a: one control plane and one layer host per state root, whatever the number of
/// mounts; layers that cannot be read lazily are pulled one by one.
@Suite("Process model and per-layer fallback", .serialized)
struct ProcessModelTests {
    @Test("an image mixing gzip and eStargz layers, or with a failing TOC: those layers pulled (with a notice), the rest lazy, containerd's tree")
    func perLayerFallback() throws {
        let tmp = try TemporaryDirectory("mixed")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-conformance-image.sh", registry.host, "conformance:v1"])
        let containerd = try TestContainerd(in: tmp.path)
        let reference = try containerd.referenceTree("\(registry.host)/conformance:v1", in: tmp.path)
        try run(["convert-image.sh", containerd.socket, "\(registry.host)/conformance:v1", "\(registry.host)/conformance:esgz", "estargz"])
        try run(["mix-layers.py", registry.host, "conformance", "v1", "esgz", "mixed", "2"])

        let root = tmp.path + "/root"
        let mnt = tmp.path + "/mnt"
        let mounted = try lazypull(["mount", "--read-only", "\(registry.host)/conformance:mixed", mnt], root: root)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }
        let notices = mounted.stderr.split(separator: "\n").filter { $0.contains("cannot be read lazily") }
        #expect(notices.count == 2, "\(mounted.stderr)")

        let layers = try statusLayers(root: root, dir: mnt)
        #expect(layers.compactMap { $0["mode"] as? String } == ["lazy", "lazy", "eager", "eager"], "\(layers)")
        let tree = try run(["treedump.py", mnt]).stdout
        #expect(tree == reference, "mixed image tree differs from containerd's:\n\(lineDiff(reference, tree))")
        try lazypull(["umount", mnt], root: root)

        // A layer whose TOC fails verification is pulled too: the image still mounts, with that
        // eStargz layer unpacked as containerd would (its index and landmark included).
        try run(["mix-layers.py", registry.host, "conformance", "v1", "esgz", "badtoc", "2", "break-toc"])
        // (A root of its own: in the first one, these layers' snapshots exist already.)
        let badRoot = tmp.path + "/root-bad"
        let bad = tmp.path + "/bad"
        let badMount = try lazypull(["mount", "--read-only", "\(registry.host)/conformance:badtoc", bad], root: badRoot)
        defer { _ = try? lazypull(["umount", bad], root: badRoot, check: false) }
        #expect(badMount.stderr.contains("digest mismatch"), "\(badMount.stderr)")
        #expect(try statusLayers(root: badRoot, dir: bad).compactMap { $0["mode"] as? String } == ["eager", "lazy", "eager", "eager"])
        let badTree = try run(["treedump.py", bad]).stdout.split(separator: "\n")
            .filter { !$0.hasPrefix("'./.no.prefetch.landmark'") && !$0.hasPrefix("'./stargz.index.json'") }
            .joined(separator: "\n") + "\n"
        #expect(badTree == reference, "tree with a failing TOC differs:\n\(lineDiff(reference, badTree))")
        try lazypull(["umount", bad], root: badRoot)
    }

    @Test("one control plane and one layer host serve every mount; a killed control plane breaks no mount; both end when idle")
    func oneHostForAllMounts() throws {
        let tmp = try TemporaryDirectory("onehost")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-small-image.sh", registry.host, "small:v1", "2"])
        try run(["make-small-image.sh", registry.host, "other:v1", "1"])
        let containerd = try TestContainerd(in: tmp.path)
        for name in ["small", "other"] {
            try run(["convert-image.sh", containerd.socket, "\(registry.host)/\(name):v1", "\(registry.host)/\(name):esgz", "estargz"])
        }
        let root = tmp.path + "/root"
        let (a, b, c) = (tmp.path + "/a", tmp.path + "/b", tmp.path + "/c")
        try lazypull(["mount", "\(registry.host)/small:esgz", a], root: root)
        defer { for dir in [a, b, c] { _ = try? lazypull(["umount", dir], root: root, check: false) } }
        let layerMounts = fuseMounts(under: root)
        // One per layer, and the merged tree of both that the mount stacks on.
        #expect(layerMounts == 3)
        // The same image again shares its layers and their merged tree.
        try lazypull(["mount", "\(registry.host)/small:esgz", b], root: root)
        #expect(fuseMounts(under: root) == layerMounts)
        #expect(processes(root: root, command: "serve").count == 1)
        let hosts = processes(root: root, command: "fuse-host")
        #expect(hosts.count == 1)

        // The control plane may die: mounts keep working, status still answers, and the next
        // mount starts a new one that uses the same layer host.
        for pid in processes(root: root, command: "serve") { kill(pid, SIGKILL) }
        #expect(try String(contentsOfFile: a + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        #expect(try statusLayers(root: root, dir: a).count == 2)
        try lazypull(["mount", "\(registry.host)/other:esgz", c], root: root)
        #expect(processes(root: root, command: "fuse-host") == hosts)
        #expect(try String(contentsOfFile: c + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")

        // Layers stay served while a mount stands on them.
        try lazypull(["umount", a], root: root)
        #expect(try String(contentsOfFile: b + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        try lazypull(["umount", b], root: root)
        try lazypull(["umount", c], root: root)
        var gone = false
        for _ in 0..<200 where !gone {
            gone = processes(root: root, command: "serve").isEmpty && processes(root: root, command: "fuse-host").isEmpty
            if !gone { Thread.sleep(forTimeInterval: 0.05) }
        }
        #expect(gone, "lazypull processes still running after the last umount")
        #expect(fuseMounts(under: root) == 0)

        // Removing the images removes their lazy snapshots and cached chunks.
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: root + "/cache/sha256")).isEmpty)
        try lazypull(["rmi", "\(registry.host)/small:esgz", "\(registry.host)/other:esgz"], root: root)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/cache/sha256") == [])
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/snapshots") == ["locks"])
    }
}

/// FUSE mounts (lazy layers) below `path`.
func fuseMounts(under path: String) -> Int {
    let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
    return mounts.split(separator: "\n").filter { line in
        let fields = line.split(separator: " ")
        return fields.count > 2 && fields[1].hasPrefix(path + "/") && fields[2].hasPrefix("fuse")
    }.count
}

/// Pids of `lazypull COMMAND --root root` processes.
func processes(root: String, command: String) -> [pid_t] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { name -> pid_t? in
        guard let pid = pid_t(name), let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { return nil }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard arguments.count > 3, arguments[1] == command,
              ["/lazypull", "/lazypull-fuse-host", "/lazypull-serve"].contains(where: { arguments[0].hasSuffix($0) }) else { return nil }
        return zip(arguments, arguments.dropFirst()).contains { $0 == "--root" && $1 == root } ? pid : nil
    }.sorted()
}

func statusLayers(root: String, dir: String) throws -> [[String: Any]] {
    let out = try lazypull(["status", "--json", dir], root: root).stdout
    let mounts = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]] ?? []
    return mounts.first?["layers"] as? [[String: Any]] ?? []
}
