import Foundation
import Testing

/// The units in systemd/ as systemd itself reads them.
struct SystemdUnitTests {
    @Test("systemd-analyze verify accepts every unit in systemd/ (and the containerd drop-in) without a warning")
    func unitsVerify() throws {
        let tmp = try TemporaryDirectory("systemd")
        let source = Paths.packageRoot + "/systemd"
        let units = try FileManager.default.contentsOfDirectory(atPath: source)
            .filter { name in [".service", ".socket", ".timer", ".path"].contains { name.hasSuffix($0) } }
        #expect(!units.isEmpty)
        var paths: [String] = []
        for unit in units {
            // The installed binary is not there on a build machine: point at the one built.
            let text = try String(contentsOfFile: "\(source)/\(unit)", encoding: .utf8)
                .replacingOccurrences(of: "/usr/local/bin/lazypull", with: Paths.lazypull)
            try text.write(toFile: "\(tmp.path)/\(unit)", atomically: true, encoding: .utf8)
            paths.append("\(tmp.path)/\(unit)")
        }
        // containerd's own unit with lazypull's drop-in beside it (systemd reads
        // <dir>/<unit>.d/ next to a unit file it is given).
        try FileManager.default.copyItem(atPath: "/lib/systemd/system/containerd.service", toPath: tmp.path + "/containerd.service")
        try FileManager.default.copyItem(atPath: source + "/containerd.service.d", toPath: tmp.path + "/containerd.service.d")
        paths.append(tmp.path + "/containerd.service")
        let result = try run(["systemd-analyze", "verify"] + paths, check: false)
        #expect(result.succeeded, "\(result.stderr)")
        #expect(result.stderr.isEmpty, "\(result.stderr)")
    }
}
