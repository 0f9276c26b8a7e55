import Foundation
import Testing
@testable import LazyPullOCI

/// Where the program an image runs by default may be (OCI image spec config.md: Entrypoint,
/// Cmd, Env), for the entrypoint prefetch.
struct DefaultProgramTests {
    static func config(_ execution: String) throws -> ImageConfig {
        let json = #"{"rootfs": {"type": "layers", "diff_ids": []}"# + (execution.isEmpty ? "" : #", "config": "# + execution) + "}"
        return try JSONDecoder().decode(ImageConfig.self, from: Data(json.utf8))
    }

    @Test(arguments: [
        (#"{"Cmd": ["/usr/bin/python3"]}"#, ["/usr/bin/python3"]),
        (#"{"Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx"]}"#, ["/docker-entrypoint.sh"]),
        (#"{"Cmd": ["bash"], "Env": ["PATH=/opt/bin:/bin"]}"#, ["/opt/bin/bash", "/bin/bash"]),
        (#"{"Cmd": ["sh"]}"#, ["/usr/local/sbin/sh", "/usr/local/bin/sh", "/usr/sbin/sh", "/usr/bin/sh", "/sbin/sh", "/bin/sh"]),
        (#"{"Cmd": ["app"], "Env": ["PATH=relative:/bin"]}"#, ["/bin/app"]),
        (#"{"Entrypoint": [], "Cmd": []}"#, []),
        (#"{"Env": ["A=b"]}"#, []),
        ("", []),
    ])
    func paths(execution: String, expected: [String]) throws {
        #expect(try Self.config(execution).defaultProgramPaths == expected)
    }

    @Test(arguments: [
        (#""architecture": "amd64", "config": {"Cmd": ["/usr/bin/python3"]}"#,
         ["/usr/bin/python3", "/lib64/ld-linux-x86-64.so.2", "/etc/ld.so.cache", "/etc/localtime", "/usr/lib/locale/C.utf8/LC_CTYPE",
          "/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache"]),
        (#""architecture": "arm64", "config": {"Entrypoint": ["/app"]}"#,
         ["/app", "/lib/ld-linux-aarch64.so.1", "/etc/ld.so.cache", "/etc/localtime", "/usr/lib/locale/C.utf8/LC_CTYPE",
          "/usr/lib/aarch64-linux-gnu/gconv/gconv-modules.cache"]),
        (#""architecture": "mips", "config": {"Cmd": ["/app"]}"#,
         ["/app", "/etc/ld.so.cache", "/etc/localtime", "/usr/lib/locale/C.utf8/LC_CTYPE"]),
        (#""architecture": "amd64", "config": {"Env": ["A=b"]}"#, []),
    ])
    func startupPaths(fields: String, expected: [String]) throws {
        let json = #"{"rootfs": {"type": "layers", "diff_ids": []}, "# + fields + "}"
        #expect(try JSONDecoder().decode(ImageConfig.self, from: Data(json.utf8)).startupPaths == expected)
    }
}
