import Foundation
import Testing

/// What a user gets for a mistake or a broken environment: one line on stderr that says what
/// failed and why, and the README's exit status (2 for what the user wrote, 1 for the rest).
@Suite("CLI errors", .serialized)
struct CLIErrorTests {
    struct Case: CustomStringConvertible, Sendable {
        var name: String
        /// Arguments after `lazypull`; `ROOT`, `DIR`, `FILE` and `REF` are replaced.
        var arguments: [String]
        var status: Int32
        /// Text the error line must contain.
        var mentions: String
        /// Whether `REF` must name an image in a registry (otherwise nothing answers for it:
        /// the case fails before any fetch).
        var needsImage = false
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "fetch timeout that is not a number", arguments: ["mount", "--root", "ROOT", "--fetch-timeout", "soon", "REF", "DIR"],
             status: 2, mentions: "fetch-timeout"),
        Case(name: "fetch timeout of zero", arguments: ["mount", "--root", "ROOT", "--fetch-timeout", "0", "REF", "DIR"],
             status: 2, mentions: "--fetch-timeout"),
        Case(name: "unknown option", arguments: ["images", "--root", "ROOT", "--colour"], status: 2, mentions: "colour"),
        Case(name: "malformed platform", arguments: ["pull", "--root", "ROOT", "--platform", "linux", "REF"],
             status: 2, mentions: "platform"),
        Case(name: "malformed reference", arguments: ["pull", "--root", "ROOT", "Ubuntu"], status: 2, mentions: "invalid reference"),
        Case(name: "root under a regular file", arguments: ["images", "--root", "FILE/root"], status: 1, mentions: "Not a directory"),
        Case(name: "mount directory under a regular file", arguments: ["mount", "--root", "ROOT", "REF", "FILE/mnt"],
             status: 1, mentions: "Not a directory", needsImage: true),
        Case(name: "platform the image lacks", arguments: ["pull", "--root", "ROOT", "--quiet", "--platform", "linux/s390x", "REF"],
             status: 1, mentions: "has no image for platform linux/s390x", needsImage: true),
        Case(name: "configuration that is not TOML", arguments: ["images", "--root", "ROOT", "--config", "FILE"],
             status: 2, mentions: "FILE:1"),
        Case(name: "configuration that cannot be read", arguments: ["images", "--root", "ROOT", "--config", "DIR"],
             status: 2, mentions: "cannot read configuration"),
        Case(name: "configuration with a value of the wrong type", arguments: ["images", "--config", "BADTYPE"],
             status: 2, mentions: "cache.max_bytes"),
    ]

    /// A directory of files for one case, and a registry with an image when the case names
    /// one (`REF`). Made per case, so that each test stops what it started.
    final class Fixture {
        let tmp: TemporaryDirectory
        let registry: TestRegistry?
        init(registry needed: Bool) throws {
            tmp = try TemporaryDirectory("cli-errors")
            registry = needed ? try TestRegistry(in: tmp.path) : nil
            if let registry { try run(["make-busybox-image.sh", registry.host, "busybox:v1"]) }
            try "this is = = not toml [".write(toFile: tmp.path + "/file", atomically: true, encoding: .utf8)
            try "[cache]\nmax_bytes = \"lots\"\n".write(toFile: tmp.path + "/badtype.toml", atomically: true, encoding: .utf8)
        }
        /// An image in the registry, or a well-formed reference nothing answers for.
        var reference: String { "\(registry?.host ?? "127.0.0.1:1")/busybox:v1" }
    }

    @Test("each mistake is one line with the documented exit status", arguments: cases)
    func table(_ c: Case) throws {
        let fixture = try Fixture(registry: c.needsImage)
        let tmp = fixture.tmp.path
        let arguments = c.arguments.map {
            $0.replacingOccurrences(of: "ROOT", with: tmp + "/root-" + c.name.replacingOccurrences(of: " ", with: "-"))
                .replacingOccurrences(of: "BADTYPE", with: tmp + "/badtype.toml")
                .replacingOccurrences(of: "FILE", with: tmp + "/file")
                .replacingOccurrences(of: "DIR", with: tmp)
                .replacingOccurrences(of: "REF", with: fixture.reference)
        }
        let result = try run([Paths.lazypull] + arguments, check: false)
        #expect(result.status == c.status, "\(c.name): exit \(result.status), stderr: \(result.stderr)")
        let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(lines.count == 1, "\(c.name): not one line: \(result.stderr)")
        #expect(result.stderr.hasPrefix("lazypull: error: "), "\(c.name): \(result.stderr)")
        let mentions = c.mentions.replacingOccurrences(of: "FILE", with: tmp + "/file")
        #expect(result.stderr.contains(mentions), "\(c.name): \(result.stderr)")
        #expect(!result.stderr.contains("NSCocoaErrorDomain") && !result.stderr.contains("Error Domain"))
    }

    @Test("a read-only state root is a one-line error for mount, images, prune and status",
          arguments: [["images"], ["prune"], ["status"], ["mount", "REF", "DIR"]])
    func readOnlyRoot(_ command: [String]) throws {
        let fixture = try Fixture(registry: command.contains("REF"))
        let root = fixture.tmp.path + "/ro-root-\(command[0])"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", root])
        defer { umount2(root, Int32(MNT_DETACH)) }
        let arguments = command.map {
            $0.replacingOccurrences(of: "REF", with: fixture.reference)
                .replacingOccurrences(of: "DIR", with: fixture.tmp.path + "/ro-mnt")
        }
        let result = try lazypull(arguments, root: root, check: false)
        #expect(result.status == 1, "exit \(result.status): \(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("lazypull: error: ") && result.stderr.contains("Read-only file system"),
                "\(result.stderr)")
    }
}
