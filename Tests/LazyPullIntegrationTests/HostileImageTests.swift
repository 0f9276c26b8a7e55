import Foundation
import Testing

/// Hostile images against the whole stack (docs/security.md): images whose TOC, footer,
/// annotations or manifest lie (Tests/Fixtures/bin/make-hostile-lazy-images.py), pushed to the
/// real registry and mounted next to a good image. Each must fail with a one-line error or fall
/// back to an eager pull with a notice; the layer host keeps its PID and goes on serving the
/// good image (a file it had not read yet reads right), nothing outside the root changes, and
/// no lazypull process dies of a signal.
@Suite("Hostile images", .serialized)
struct HostileImageTests {
    /// What each hostile tag may do: mount (after falling back with a notice, or lazily because
    /// the lie is harmless), or fail with an error mentioning the text given.
    enum Outcome: Sendable {
        case mounts
        case fails(String)
        /// The lazy read is refused with a notice naming `notice`, and the eager pull it falls
        /// back to fails with an error naming `error`.
        case fallsBackThenFails(notice: String, error: String)
    }

    static let cases: [(tag: String, outcome: Outcome)] = [
        ("uid-minus-one", .mounts), ("mode-minus-one", .mounts), ("dev-major-2-32", .mounts),
        ("size-near-max", .mounts), ("sizes-past-max", .mounts), ("chunk-offset-past", .mounts),
        ("inner-offset-neg", .mounts), ("chunk-size-2-44", .mounts), ("offset-past-toc", .mounts),
        ("nul-name", .mounts), ("dotdot-name", .mounts), ("deep-path", .mounts), ("duplicates", .mounts),
        ("many-entries", .mounts), ("huge-file", .mounts), ("elf-phoff", .mounts),
        ("footer-negative", .fallsBackThenFails(notice: "HTTP 416, the range lies past the blob's end", error: "9223372036854775807")), ("zstd-position-max", .fails("zstd")),
        ("layer-sizes-past-max", .fails("layer sizes add up")),
    ]

    @Test("hostile TOCs, footers and manifests: one-line errors or notices, the layer host and a good mount live on")
    func hostileImages() throws {
        let tmp = try TemporaryDirectory("hostile-lazy")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-busybox-image.sh", registry.host, "good:v1", "1"])
        let root = tmp.path + "/root"
        let good = "\(registry.host)/good:esgz"
        try lazypull(["convert", "--estargz", "\(registry.host)/good:v1", good], root: root)
        try run(["make-hostile-lazy-images.py", registry.host, "hostile-lazy"])

        // Canaries: where an escaping name would write.
        let canary = tmp.path + "/canary"
        try FileManager.default.createDirectory(atPath: canary, withIntermediateDirectories: true)
        try "original".write(toFile: canary + "/passwd-lazy", atomically: false, encoding: .utf8)
        let before = try run(["find", tmp.path, "-path", root, "-prune", "-o", "-print"]).stdout

        let goodMount = tmp.path + "/good"
        try lazypull(["mount", "--no-background-fetch", "--quiet", good, goodMount], root: root)
        defer { _ = try? lazypull(["umount", goodMount], root: root, check: false) }
        #expect(try String(contentsOfFile: goodMount + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        let host = processes(root: root, command: "fuse-host")
        let plane = processes(root: root, command: "serve")
        #expect(host.count == 1 && plane.count == 1)

        var mounted: [String] = []
        defer { for target in mounted { _ = try? lazypull(["umount", target], root: root, check: false) } }
        for (tag, outcome) in Self.cases {
            let target = tmp.path + "/m-" + tag
            let result = try lazypull(["mount", "--no-background-fetch", "--quiet", "\(registry.host)/hostile-lazy:\(tag)", target],
                                      root: root, check: false)
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.allSatisfy { $0.hasPrefix("lazypull: notice: ") || $0.hasPrefix("lazypull: error: ") },
                    "\(tag): \(result.stderr)")
            switch outcome {
            case .mounts:
                #expect(result.succeeded, "\(tag): \(result.stderr)")
                if result.succeeded { mounted.append(target) }
                #expect(lines.count <= 1, "\(tag): \(result.stderr)")
            case .fails(let text):
                #expect(!result.succeeded, "\(tag) mounted")
                #expect(lines.last.map { $0.hasPrefix("lazypull: error: ") && $0.contains(text) } == true, "\(tag): \(result.stderr)")
            case .fallsBackThenFails(let notice, let error):
                #expect(!result.succeeded, "\(tag) mounted")
                #expect(lines.first.map { $0.hasPrefix("lazypull: notice: ") && $0.contains(notice) } == true, "\(tag): \(result.stderr)")
                #expect(lines.last.map { $0.hasPrefix("lazypull: error: ") && $0.contains(error) } == true, "\(tag): \(result.stderr)")
            }
            // The layer host and the control plane are the same processes after every image.
            #expect(processes(root: root, command: "fuse-host") == host, "\(tag): layer host \(host) gone")
            #expect(processes(root: root, command: "serve") == plane, "\(tag): control plane \(plane) gone")
        }

        // Reads into the hostile trees that did mount fail or answer, never hang or crash the host.
        if mounted.contains(tmp.path + "/m-huge-file") {
            let handle = try #require(FileHandle(forReadingAtPath: tmp.path + "/m-huge-file/huge"))
            try handle.seek(toOffset: (1 << 40) - 4096)
            #expect(throws: (any Error).self) { _ = try handle.read(upToCount: 4096) }
            try? handle.close()
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp.path + "/m-duplicates").sorted() == ["dup", "etc"])

        // The good image still serves a file it never read (its second layer's), from the registry.
        #expect(try String(contentsOfFile: goodMount + "/second.txt", encoding: .utf8) == "second layer\n")
        #expect(processes(root: root, command: "fuse-host") == host)

        // Nothing outside the root changed but the mount directories.
        #expect(try String(contentsOfFile: canary + "/passwd-lazy", encoding: .utf8) == "original")
        let after = try run(["find", tmp.path, "-path", root, "-prune", "-o", "-path", tmp.path + "/m-*", "-prune", "-o",
                             "-path", goodMount, "-prune", "-o", "-print"]).stdout
        let made = Set(after.split(separator: "\n")).subtracting(before.split(separator: "\n"))
        #expect(made.allSatisfy { $0.hasPrefix(tmp.path + "/m-") || $0 == Substring(goodMount) }, "new outside the root: \(made)")

        // No lazypull process died of a signal: their logs say so when one does.
        for log in ["serve.log", "fuse-host.log"] {
            let text = (try? String(contentsOfFile: root + "/run/" + log, encoding: .utf8)) ?? ""
            #expect(!text.contains("Fatal error") && !text.contains("Crash") && !text.contains("💣"), "\(log):\n\(text.suffix(2000))")
        }
    }
}

/// One image must not poison another's lazily read layer nor read it (docs/security.md,
/// rule 4): `evil:v1`, served by a registry that lies (Tests/Fixtures/bin/lying-registry.py),
/// names the victim's blob digest and diff_id with bytes and a TOC of its own.
@Suite("Cross-image cache", .serialized)
struct CrossImageCacheTests {
    final class Fixture {
        let tmp: TemporaryDirectory
        let registry: TestRegistry
        let liar: BackgroundProcess
        let liarHost: String
        let victimLayer: String

        init(_ label: String) throws {
            tmp = try TemporaryDirectory(label)
            registry = try TestRegistry(in: tmp.path)
            let made = try run(["make-hostile-lazy-images.py", "--poison", registry.host, tmp.path + "/lies"]).stdout
            victimLayer = made.split(separator: " ").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
            let port = freePort()
            liarHost = "127.0.0.1:\(port)"
            let ready = tmp.path + "/liar-ready"
            liar = try BackgroundProcess(["lying-registry.py", "--listen", String(port), "--root", tmp.path + "/lies",
                                          "--ready-file", ready], readyFile: ready, log: tmp.path + "/liar.log")
        }
    }

    func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    @Test("an attacker mounted first cannot make the victim read its bytes")
    func poisonFirst() throws {
        let f = try Fixture("poison")
        let root = f.tmp.path + "/root"
        let evil = f.tmp.path + "/evil", victim = f.tmp.path + "/victim"
        try lazypull(["mount", "--no-background-fetch", "--quiet", "\(f.liarHost)/evil:v1", evil], root: root)
        defer { _ = try? lazypull(["umount", evil], root: root, check: false) }
        #expect(read(evil + "/bin/app") == "evil app\n")
        // The victim's image names the same blob and diff_id: its mount either fails, naming the
        // clash, or reads the victim's own bytes; never the attacker's.
        let result = try lazypull(["mount", "--no-background-fetch", "--quiet", "\(f.registry.host)/victim:v1", victim],
                                  root: root, check: false)
        if result.succeeded {
            defer { _ = try? lazypull(["umount", victim], root: root, check: false) }
            #expect(read(victim + "/bin/app") == "victim app\n")
            #expect(read(victim + "/secret") == "victim secret\n")
        } else {
            #expect(result.stderr.contains("claim the same diff_ids"), "\(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1)
        }
    }

    @Test("an attacker mounted after the victim cannot read the victim's cached layer")
    func readAfter() throws {
        let f = try Fixture("poison-read")
        let root = f.tmp.path + "/root"
        let evil = f.tmp.path + "/evil", victim = f.tmp.path + "/victim"
        try lazypull(["mount", "--no-background-fetch", "--quiet", "\(f.registry.host)/victim:v1", victim], root: root)
        defer { _ = try? lazypull(["umount", victim], root: root, check: false) }
        #expect(read(victim + "/secret") == "victim secret\n")
        let result = try lazypull(["mount", "--no-background-fetch", "--quiet", "\(f.liarHost)/evil:v1", evil],
                                  root: root, check: false)
        if result.succeeded {
            defer { _ = try? lazypull(["umount", evil], root: root, check: false) }
            #expect(read(evil + "/secret") != "victim secret\n")
            #expect(read(evil + "/bin/app") != "victim app\n")
        } else {
            #expect(result.stderr.contains("claim the same diff_ids"), "\(result.stderr)")
        }
        // The victim's mount is untouched.
        #expect(read(victim + "/bin/app") == "victim app\n")
    }

    @Test("two images that really share a layer share its fetched chunks")
    func realSharing() throws {
        let f = try Fixture("sharing")
        let root = f.tmp.path + "/root"
        let log = f.tmp.path + "/proxy.log"
        let port = freePort()
        let proxy = try faultProxy(port: port, upstream: f.registry.host, log: log, in: f.tmp.path)
        defer { proxy.stop() }
        let first = f.tmp.path + "/v1", second = f.tmp.path + "/v2"
        try lazypull(["mount", "--no-background-fetch", "--quiet", "127.0.0.1:\(port)/victim:v1", first], root: root)
        #expect(read(first + "/bin/app") == "victim app\n")
        // Unmounted: the layer host lets the layer go; its fetched chunks stay in the cache.
        try lazypull(["umount", first], root: root)
        let before = logLines(log).count
        try lazypull(["mount", "--no-background-fetch", "--quiet", "127.0.0.1:\(port)/victim:v2", second], root: root)
        defer { _ = try? lazypull(["umount", second], root: root, check: false) }
        let layerRequests = { logLines(log).dropFirst(before).filter { (($0["path"] as? String) ?? "").hasSuffix(f.victimLayer) } }
        let atMount = layerRequests().count
        #expect(read(second + "/bin/app") == "victim app\n")
        #expect(layerRequests().count == atMount, "reading a shared, cached file fetched the layer again")
        #expect(read(second + "/top.txt") == "second layer of v2\n")
        let caches = try FileManager.default.contentsOfDirectory(atPath: root + "/cache/sha256")
            .filter { $0.hasPrefix(String(f.victimLayer.dropFirst(7))) && $0.hasSuffix(".data") }
        #expect(caches.count == 1, "\(caches)")
    }
}
