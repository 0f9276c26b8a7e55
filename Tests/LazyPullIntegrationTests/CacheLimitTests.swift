import Foundation
import Testing

/// `cache.max_bytes`: a soft limit of the cached layer data.
struct CacheLimitTests {
    /// The configuration reaches the control plane `mount` starts both ways: `$LAZYPULL_CONFIG`
    /// in its environment, and `--config FILE`, passed on to it.
    @Test("past the cache limit background fetches stop and reads still work; unused layers' data is evicted",
          arguments: ["environment", "--config"])
    func cacheLimit(configGivenBy: String) throws {
        let tmp = try TemporaryDirectory("cachelimit")
        let registry = try TestRegistry(in: tmp.path)
        let made = try run(["make-small-image.sh", registry.host, "small:v1", "8"]).stdout
        let dataSHA = made.split(separator: "\n").first { $0.hasPrefix("data.bin-sha256 ") }.map { String($0.dropFirst(16)) }
        let root = tmp.path + "/root"
        try lazypull(["convert", "--estargz", "\(registry.host)/small:v1", "\(registry.host)/small:esgz"], root: tmp.path + "/convert")
        let limit = 2 << 20
        let config = tmp.path + "/config.toml"
        try "[cache]\nmax_bytes = \(limit)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let environment = configGivenBy == "environment" ? ["LAZYPULL_CONFIG": config] : [:]
        let flag = configGivenBy == "environment" ? [] : ["--config", config]
        let mnt = tmp.path + "/mnt"
        try lazypull(["mount"] + flag + ["\(registry.host)/small:esgz", mnt], root: root, environment: environment)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }

        var states: [String] = []
        for _ in 0..<300 {
            states = try statusLayers(root: root, dir: mnt).compactMap { $0["background"] as? String }
            if states.contains("cache-full") { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(states.contains("cache-full"), "\(states)")
        // Each layer's background fetch checks the limit before a request of at most 1 MiB.
        let usage = cacheBytes(root)
        #expect(usage <= limit + 2 * (1 << 20) + (1 << 18), "cache holds \(usage) bytes")

        // Reads are served (and cached) regardless.
        let sum = try run(["timeout", "120", "sha256sum", mnt + "/data.bin"]).stdout.split(separator: " ").first.map(String.init)
        #expect(sum != nil && sum == dataSHA)
        #expect(cacheBytes(root) > 8 << 20)

        // Unmounted, the layers are not in use: their data goes until the cache fits.
        try lazypull(["umount"] + flag + [mnt], root: root, environment: environment)
        #expect(cacheBytes(root) <= limit)
    }

    func cacheBytes(_ root: String) -> Int {
        let dir = root + "/cache/sha256"
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).reduce(0) { total, name in
            var st = stat()
            return lstat("\(dir)/\(name)", &st) == 0 ? total + Int(st.st_blocks) * 512 : total
        }
    }
}
