import Foundation
import LazyPullOCI
import Testing
@testable import LazyPullCommands

/// `/etc/lazypull/config.toml`: the documented example is the defaults; every key optional;
/// bad files are named in a clear error.
struct ConfigurationTests {
    static func load(_ text: String) throws -> Configuration {
        let path = NSTemporaryDirectory() + "lazypull-config-\(UUID().uuidString).toml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try Configuration.load(path)
    }

    @Test func documentedExampleIsTheDefaults() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var example = try Configuration.load(root.appendingPathComponent("docs/config.toml").path)
        #expect(example.root == "/var/lib/lazypull")
        example.root = nil
        #expect(example == Configuration())
    }

    @Test func missingFileIsTheDefaults() throws {
        #expect(try Configuration.load("/nonexistent/lazypull.toml") == Configuration())
    }

    @Test(arguments: [
        ("", Configuration()),
        ("[fetch]\nbackground = false\n", { var c = Configuration(); c.fetch.background = false; return c }()),
        ("root = \"/srv/lp\"\n[snapshotter]\naddress = \"/tmp/s.sock\"\n",
         { var c = Configuration(); c.root = "/srv/lp"; c.snapshotter.address = "/tmp/s.sock"; return c }()),
        ("[fetch]\ntimeout_seconds = 5\nplain_http = true\n",
         { var c = Configuration(); c.fetch.timeoutSeconds = 5; c.fetch.plainHTTP = true; return c }()),
    ])
    func parses(text: String, expected: Configuration) throws {
        #expect(try Self.load(text) == expected)
    }

    @Test(arguments: [
        "[fetch\ntimeout_seconds = 5",          // malformed TOML
        "[fetch]\ntimeout_seconds = \"soon\"",  // wrong type
        "[fetch]\ntimeout_seconds = 0",         // out of range
        "root = 7",
    ])
    func rejects(text: String) {
        #expect(throws: LazyPullError.self) { try Self.load(text) }
    }
}
