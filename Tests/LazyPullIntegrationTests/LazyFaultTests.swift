import Foundation
import Testing

/// Lazy reads when the registry misbehaves, through a fault proxy restarted in another mode
/// on the same port while the mount stays up.
@Suite("Lazy mounts under faults", .serialized)
struct LazyFaultTests {
    func proxy(_ port: Int, upstream: String, in dir: String, _ faults: [String] = []) throws -> BackgroundProcess {
        try faultProxy(port: port, upstream: upstream, log: dir + "/proxy.log", in: dir, faults)
    }

    /// A chunk whose fetch just failed fails its next readers at once for
    /// `LayerDataCache.failureMemory` (1 s): a read meant to reach the registry again waits
    /// that out first.
    func waitOutFailureMemory() { Thread.sleep(forTimeInterval: 1.5) }

    /// `cat` in a child with a hang guard: a read through the mount must end by itself.
    func cat(_ path: String) throws -> CommandResult {
        try run(["timeout", "120", "cat", path], check: false)
    }

    @Test("unreachable registry: EIO, then the same read succeeds; flipped bytes: EIO; ignored Range: right data")
    func faults() throws {
        let tmp = try TemporaryDirectory("lazyfaults")
        let registry = try TestRegistry(in: tmp.path)
        let made = try run(["make-small-image.sh", registry.host, "small:v1", "4"]).stdout
        let dataSHA = made.split(separator: "\n").first { $0.hasPrefix("data.bin-sha256 ") }.map { String($0.dropFirst(16)) }
        let containerd = try TestContainerd(in: tmp.path)
        try run(["convert-image.sh", containerd.socket, "\(registry.host)/small:v1", "\(registry.host)/small:esgz", "estargz"])
        let port = freePort()
        let root = tmp.path + "/root", mnt = tmp.path + "/mnt"

        var front = try proxy(port, upstream: registry.host, in: tmp.path)
        try lazypull(["mount", "--no-background-fetch", "--fetch-timeout", "3", "127.0.0.1:\(port)/small:esgz", mnt], root: root)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }

        // Registry unreachable: EIO (not a hang), and the mount stays up.
        front.stop()
        let down = try cat(mnt + "/hello.txt")
        #expect(down.status == 1 && down.stderr.contains("Input/output error"), "\(down)")
        #expect(isMounted(mnt))

        // Registry back: the same read succeeds without remounting.
        front = try proxy(port, upstream: registry.host, in: tmp.path)
        waitOutFailureMemory()
        #expect(try cat(mnt + "/hello.txt").stdout == "hello from lazypull\n")
        front.stop()

        // A flipped byte in a chunk: EIO and a log line, never wrong data.
        front = try proxy(port, upstream: registry.host, in: tmp.path, ["--flip-byte"])
        let flipped = try cat(mnt + "/data.bin")
        #expect(flipped.status == 1 && flipped.stderr.contains("Input/output error"))
        let logText = try String(contentsOfFile: root + "/run/fuse-host.log", encoding: .utf8)
        // Caught by the inflater (bad block or CRC) or by the chunk digest, whichever sees it first.
        #expect(logText.contains("corrupt gzip stream") || logText.contains("digest mismatch"), "\(logText)")
        front.stop()

        // A server that ignores Range (answers 200 with the whole blob): correct data.
        front = try proxy(port, upstream: registry.host, in: tmp.path, ["--ignore-range"])
        waitOutFailureMemory()
        let sum = try run(["sha256sum", mnt + "/data.bin"]).stdout.split(separator: " ").first.map(String.init)
        #expect(sum != nil && sum == dataSHA)
        front.stop()
    }

    @Test("after every lazypull process was killed, damaged cached data is caught: EIO without the registry, right data with it")
    func damagedCacheAfterRestart() throws {
        let tmp = try TemporaryDirectory("lazycache")
        let registry = try TestRegistry(in: tmp.path)
        let made = try run(["make-small-image.sh", registry.host, "small:v1", "2"]).stdout
        let dataSHA = made.split(separator: "\n").first { $0.hasPrefix("data.bin-sha256 ") }.map { String($0.dropFirst(16)) }
        let containerd = try TestContainerd(in: tmp.path)
        try run(["convert-image.sh", containerd.socket, "\(registry.host)/small:v1", "\(registry.host)/small:esgz", "estargz"])
        let port = freePort()
        let root = tmp.path + "/root", mnt = tmp.path + "/mnt"
        let ref = "127.0.0.1:\(port)/small:esgz"

        var front = try proxy(port, upstream: registry.host, in: tmp.path)
        try lazypull(["mount", "--no-background-fetch", ref, mnt], root: root)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }
        let first = try run(["sha256sum", mnt + "/data.bin"]).stdout.split(separator: " ").first.map(String.init)
        #expect(first != nil && first == dataSHA)

        // Crash: every lazypull process dies; the dead mount is taken down without them.
        for pid in processes(root: root, command: "serve") + processes(root: root, command: "fuse-host") { kill(pid, SIGKILL) }
        try lazypull(["umount", mnt], root: root)
        // The cached contents are damaged while nothing runs.
        let cache = root + "/cache/sha256"
        for name in try FileManager.default.contentsOfDirectory(atPath: cache) where name.hasSuffix(".data") {
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: cache + "/" + name))
            let size = try handle.seekToEnd()
            try handle.seek(toOffset: 0)
            try handle.write(contentsOf: Data(repeating: 0x5A, count: Int(size)))
            try handle.close()
        }

        // Mounted again from local state with the registry away: the damage is found, and
        // the read fails instead of returning wrong bytes.
        front.stop()
        try lazypull(["mount", "--no-background-fetch", "--fetch-timeout", "3", ref, mnt], root: root)
        let away = try cat(mnt + "/data.bin")
        #expect(away.status != 0 && away.stderr.contains("Input/output error"), "\(away)")
        // The registry back: the same read gets the right bytes.
        front = try proxy(port, upstream: registry.host, in: tmp.path)
        waitOutFailureMemory()
        let sum = try run(["timeout", "120", "sha256sum", mnt + "/data.bin"]).stdout.split(separator: " ").first.map(String.init)
        #expect(sum != nil && sum == dataSHA)
        front.stop()
    }

    @Test("a token that expires while mounted is renewed on the 401 and the read succeeds")
    func expiredToken() throws {
        let tmp = try TemporaryDirectory("lazytoken")
        let issuerDir = tmp.path + "/issuer"
        let issuerPort = freePort()
        // Tokens claim a 300 s lifetime but expire after about 5 s (the registry allows 60 s of
        // clock skew): the client's cache still holds them when the registry refuses them.
        let issuer = try BackgroundProcess(
            ["token-issuer.py", "--port", String(issuerPort), "--dir", issuerDir, "--user", "alice:s3cret",
             "--ttl", "300", "--exp-offset", "-55"],
            readyFile: issuerDir + "/ready", log: tmp.path + "/issuer.log")
        let registry = try TestRegistry(in: tmp.path, mode: [
            "token", "http://127.0.0.1:\(issuerPort)/token", "lazypull-test", issuerDir + "/issuer.crt"])
        try run(["make-small-image.sh", registry.host, "private:v1", "2"], environment: ["PUSH_CREDS": "alice:s3cret"])
        let auth = Data("alice:s3cret".utf8).base64EncodedString()
        let config = tmp.path + "/docker"
        try FileManager.default.createDirectory(atPath: config, withIntermediateDirectories: true)
        try #"{"auths": {"\#(registry.host)": {"auth": "\#(auth)"}}}"#.write(toFile: config + "/config.json", atomically: true, encoding: .utf8)
        let env = ["DOCKER_CONFIG": config]
        let root = tmp.path + "/root", mnt = tmp.path + "/mnt"
        try lazypull(["convert", "--estargz", "\(registry.host)/private:v1", "\(registry.host)/private:esgz"], root: root, environment: env)
        try lazypull(["mount", "--no-background-fetch", "--fetch-timeout", "10", "\(registry.host)/private:esgz", mnt],
                     root: root, environment: env)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }
        #expect(try cat(mnt + "/hello.txt").stdout == "hello from lazypull\n")
        func issued() -> Int {
            logLines(issuerDir + "/requests.log").filter { ($0["status"] as? Int) == 200 && ($0["auth_given"] as? Bool) == true }.count
        }
        let before = issued()
        Thread.sleep(forTimeInterval: 7)
        let data = try run(["timeout", "120", "wc", "-c", mnt + "/data.bin"])
        #expect(data.stdout.hasPrefix("\(2 * 1024 * 1024) "), "\(data)")
        #expect(issued() > before, "the expired token was not renewed")
        withExtendedLifetime(issuer) {}
    }
}
