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
}
