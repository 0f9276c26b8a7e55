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
    }

    static let cases: [(tag: String, outcome: Outcome)] = [
        ("uid-minus-one", .mounts), ("mode-minus-one", .mounts), ("dev-major-2-32", .mounts),
        ("size-near-max", .mounts), ("sizes-past-max", .mounts), ("chunk-offset-past", .mounts),
        ("inner-offset-neg", .mounts), ("chunk-size-2-44", .mounts), ("offset-past-toc", .mounts),
        ("nul-name", .mounts), ("dotdot-name", .mounts), ("deep-path", .mounts), ("duplicates", .mounts),
        ("many-entries", .mounts), ("huge-file", .mounts), ("elf-phoff", .mounts),
        ("footer-negative", .fails("9223372036854775807")), ("zstd-position-max", .fails("zstd")),
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
