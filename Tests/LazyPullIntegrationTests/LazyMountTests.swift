import Foundation
import Testing

/// Lazy mounts against the reference: containerd's unpack of the original image, for layers
/// converted by Debian's ctr-remote, mounted by `lazypull mount` (FUSE layer host + overlayfs).
@Suite("Lazy mounts", .serialized)
struct LazyMountTests {
    @Test("lazy eStargz (ctr-remote and lazypull convert) and zstd:chunked mounts equal containerd's tree of the original",
          arguments: ["estargz", "zstdchunked", "lazypull"])
    func conformance(converter: String) throws {
        let tmp = try TemporaryDirectory("lazy")
        let registry = try TestRegistry(in: tmp.path)
        let original = "\(registry.host)/conformance:v1"
        try run(["make-conformance-image.sh", registry.host, "conformance:v1"])
        let containerd = try TestContainerd(in: tmp.path)
        let reference = try containerd.referenceTree(original, in: tmp.path)
        let converted = "\(registry.host)/conformance:\(converter)"
        let root = tmp.path + "/root"
        if converter == "lazypull" {
            try lazypull(["convert", "--estargz", original, converted], root: root)
            // containerd unpacks lazypull's eStargz like any gzip layer, to the original tree plus
            // the format's own files, which a lazy view hides.
            let plain = try containerd.referenceTree(converted, in: tmp.path).split(separator: "\n")
                .filter { !$0.hasPrefix("'./.no.prefetch.landmark'") && !$0.hasPrefix("'./stargz.index.json'") }
                .joined(separator: "\n") + "\n"
            #expect(plain == reference, "containerd's unpack of lazypull's eStargz differs:\n\(lineDiff(reference, plain))")
        } else {
            try run(["convert-image.sh", containerd.socket, original, converted, converter])
        }

        let mnt = tmp.path + "/mnt"
        let mounted = try lazypull(["mount", "--read-only", converted, mnt], root: root)
        #expect(mounted.stdout.contains("(lazy)"))
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }

        // First reads are concurrent: 32 readers hashing every file get the eager tree's bytes.
        let eager = tmp.path + "/eager"
        try lazypull(["mount", "--eager", "--read-only", "--quiet", original, eager], root: root)
        defer { _ = try? lazypull(["umount", eager], root: root, check: false) }
        let lazyHashes = try run(["parallel-hash.py", mnt, "32"]).stdout
        let eagerHashes = try run(["parallel-hash.py", eager, "1"]).stdout
        #expect(!lazyHashes.isEmpty)
        #expect(lazyHashes == eagerHashes, "\(lineDiff(eagerHashes, lazyHashes))")
        try lazypull(["umount", eager], root: root)

        let tree = try run(["treedump.py", mnt]).stdout
        #expect(tree == reference, "lazy \(converter) tree differs from containerd's:\n\(lineDiff(reference, tree))")
        try lazypull(["umount", mnt], root: root)
        #expect(!isMounted(mnt))
        #expect(!(try String(contentsOfFile: "/proc/mounts", encoding: .utf8)).contains(root))
    }

    @Test("reading one file fetches a small part of the image, counted on the wire")
    func laziness() throws {
        let tmp = try TemporaryDirectory("laziness")
        let registry = try TestRegistry(in: tmp.path)
        let made = try run(["make-small-image.sh", registry.host, "small:v1", "16"]).stdout
        let dataSHA = made.split(separator: "\n").first { $0.hasPrefix("data.bin-sha256 ") }.map { String($0.dropFirst(16)) }
        let containerd = try TestContainerd(in: tmp.path)
        try run(["convert-image.sh", containerd.socket, "\(registry.host)/small:v1", "\(registry.host)/small:esgz", "estargz"])
        let port = freePort()
        let log = tmp.path + "/proxy.log"
        let proxy = try faultProxy(port: port, upstream: registry.host, log: log, in: tmp.path)
        let root = tmp.path + "/root"
        let mnt = tmp.path + "/mnt"
        try lazypull(["mount", "--no-background-fetch", "127.0.0.1:\(port)/small:esgz", mnt], root: root)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }
        #expect(try String(contentsOfFile: mnt + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
        let blobBytes = logLines(log).filter { (($0["path"] as? String) ?? "").contains("/blobs/") }
            .compactMap { $0["bytes_sent"] as? Int }.reduce(0, +)
        #expect(blobBytes > 0)
        #expect(blobBytes < 16 * 1024 * 1024 / 10, "fetched \(blobBytes) bytes to read one small file")
        // data.bin is 16 MiB of random bytes, four 4 MiB chunks: more than a first read fetches
        // whole. Reading its first page fetches its first chunks, not all of it (the fetch
        // past the read goes on after the read returns: wait until the count settles).
        let handle = try #require(FileHandle(forReadingAtPath: mnt + "/data.bin"))
        #expect(try handle.read(upToCount: 4096)?.count == 4096)
        try handle.close()
        var fetched = -1
        for _ in 0..<60 {
            let now = try statusLayers(root: root, dir: mnt).compactMap { $0["fetchedBytes"] as? Int }.reduce(0, +)
            if now == fetched && now > 0 { break }
            fetched = now
            Thread.sleep(forTimeInterval: 0.5)
        }
        #expect(fetched > 0 && fetched < 12 * 1024 * 1024, "a first read of a 16 MiB file fetched \(fetched) bytes")
        // The rest is there when asked for, read in order through the moving read-ahead.
        let sum = try run(["sha256sum", mnt + "/data.bin"]).stdout.split(separator: " ").first.map(String.init)
        #expect(sum != nil && sum == dataSHA)
        try lazypull(["umount", mnt], root: root)
        withExtendedLifetime(proxy) {}
    }

    @Test("python3 in a chroot of a lazily mounted Debian + python3 eStargz image fetches under 10 % of it, counted on the wire; a module's libraries are prefetched")
    func pythonLaziness() throws {
        let tmp = try TemporaryDirectory("python")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-python-image.sh", tmp.path + "/oci", "bookworm"])
        try run(["skopeo", "copy", "-q", "--dest-tls-verify=false", "oci:\(tmp.path)/oci:bookworm", "docker://\(registry.host)/python:gzip"])
        let containerd = try TestContainerd(in: tmp.path)
        try run(["convert-image.sh", containerd.socket, "\(registry.host)/python:gzip", "\(registry.host)/python:esgz", "estargz"])
        let raw = try run(["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(registry.host)/python:esgz"]).stdout
        let manifest = try JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any] ?? [:]
        let imageBytes = (manifest["layers"] as? [[String: Any]] ?? []).compactMap { $0["size"] as? Int }.reduce(0, +)
        #expect(imageBytes > 20_000_000)

        let port = freePort()
        let log = tmp.path + "/proxy.log"
        let proxy = try faultProxy(port: port, upstream: registry.host, log: log, in: tmp.path)
        let root = tmp.path + "/root"
        let mnt = tmp.path + "/mnt"
        try lazypull(["mount", "--no-background-fetch", "127.0.0.1:\(port)/python:esgz", mnt], root: root)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }
        func requests() throws -> Int {
            try statusLayers(root: root, dir: mnt).compactMap { $0["fetchRequests"] as? Int }.reduce(0, +)
        }
        // Entrypoint prefetch: the image's Cmd, /usr/bin/python3, is fetched (with its
        // libraries) once the layers are served, before anything reads it.
        var settled = try requests()
        for _ in 0..<600 {
            Thread.sleep(forTimeInterval: 0.1)
            let now = try requests()
            if now == settled && now > 0 { break }
            settled = now
        }
        #expect(settled > 0, "nothing was prefetched")
        _ = try run(["cat", mnt + "/usr/bin/python3"])
        #expect(try requests() == settled, "reading the default program still needed the registry")
        #expect(try run(["chroot", mnt, "/usr/bin/python3", "-c", "print(\"hello\")"]).stdout == "hello\n")
        let fetched = logLines(log).compactMap { $0["bytes_sent"] as? Int }.reduce(0, +)
        #expect(fetched > 0)
        #expect(fetched * 10 < imageBytes, "fetched \(fetched) of \(imageBytes) bytes to run python3")
        print("python3 hello: fetched \(fetched) of \(imageBytes) compressed bytes")

        // Dependency prefetch: reading the first bytes of an extension module (one request)
        // makes the layer host fetch the libraries it needs, libssl and libcrypto, before
        // anything opens them; opening libssl afterwards asks the registry for nothing.
        let before = try requests()
        _ = try run(["head", "-c", "4", mnt + "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so"])
        var after = try requests()
        for _ in 0..<600 where after < before + 3 {
            Thread.sleep(forTimeInterval: 0.1)
            after = try requests()
        }
        #expect(after >= before + 3, "the module's libraries were not prefetched: \(after - before) requests")
        _ = try run(["cat", mnt + "/usr/lib/x86_64-linux-gnu/libssl.so.3"])
        #expect(try requests() == after)
        try lazypull(["umount", mnt], root: root)
        withExtendedLifetime(proxy) {}
    }

    @Test("status shows fetched bytes; after the background fetch the layer is read without the registry")
    func backgroundFetchAndStatus() throws {
        let tmp = try TemporaryDirectory("background")
        let registry = try TestRegistry(in: tmp.path)
        let made = try run(["make-small-image.sh", registry.host, "small:v1", "6"]).stdout
        let dataSHA = made.split(separator: "\n").first { $0.hasPrefix("data.bin-sha256 ") }.map { String($0.dropFirst(16)) }
        let containerd = try TestContainerd(in: tmp.path)
        try run(["convert-image.sh", containerd.socket, "\(registry.host)/small:v1", "\(registry.host)/small:esgz", "estargz"])
        let port = freePort()
        var proxy: BackgroundProcess? = try faultProxy(port: port, upstream: registry.host, log: tmp.path + "/proxy.log", in: tmp.path)
        let root = tmp.path + "/root"
        let ref = "127.0.0.1:\(port)/small:esgz"

        // Without background fetch, only what is read arrives.
        let quiet = tmp.path + "/quiet"
        try lazypull(["mount", "--no-background-fetch", ref, quiet], root: root)
        _ = try String(contentsOfFile: quiet + "/hello.txt", encoding: .utf8)
        // The layer host refreshes its status a few times a second.
        var layers: [[String: Any]] = []
        for _ in 0..<100 {
            layers = try statusLayers(root: root, dir: quiet)
            if layers.compactMap({ $0["fetchedBytes"] as? Int }).reduce(0, +) > 0 { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        #expect(layers.count == 2 && layers.allSatisfy { ($0["background"] as? String) == "off" && ($0["mode"] as? String) == "lazy" })
        let fetched = layers.compactMap { $0["fetchedBytes"] as? Int }.reduce(0, +)
        let total = layers.compactMap { $0["totalBytes"] as? Int }.reduce(0, +)
        #expect(fetched > 0 && fetched < total / 10)
        try lazypull(["umount", quiet], root: root)

        // With it, every layer completes; then the registry is not needed any more.
        let mnt = tmp.path + "/mnt"
        try lazypull(["mount", ref, mnt], root: root)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }
        var done = false
        for _ in 0..<600 where !done {
            done = try statusLayers(root: root, dir: mnt).allSatisfy { ($0["background"] as? String) == "done" }
            if !done { Thread.sleep(forTimeInterval: 0.1) }
        }
        #expect(done, "background fetch did not complete")
        proxy?.stop()
        proxy = nil
        let sum = try run(["timeout", "120", "sha256sum", mnt + "/data.bin"]).stdout.split(separator: " ").first.map(String.init)
        #expect(sum != nil && sum == dataSHA)
        #expect(try lazypull(["status", mnt], root: root).stdout.contains("lazy"))
    }

    @Test("an image without lazy layers is pulled eagerly, with a notice")
    func fallback() throws {
        let tmp = try TemporaryDirectory("fallback")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-small-image.sh", registry.host, "small:v1", "1"])
        let root = tmp.path + "/root"
        let mnt = tmp.path + "/mnt"
        let result = try lazypull(["mount", "\(registry.host)/small:v1", mnt], root: root)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }
        #expect(result.stderr.contains("cannot be read lazily"))
        #expect(try String(contentsOfFile: mnt + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")
    }

    @Test("runc runs a container on a lazy mount")
    func runcOnLazyMount() throws {
        let tmp = try TemporaryDirectory("lazyrunc")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-busybox-image.sh", registry.host, "busybox:v1"])
        let containerd = try TestContainerd(in: tmp.path)
        try run(["convert-image.sh", containerd.socket, "\(registry.host)/busybox:v1", "\(registry.host)/busybox:esgz", "estargz"])
        let root = tmp.path + "/root"
        let bundle = tmp.path + "/bundle"
        try lazypull(["mount", "\(registry.host)/busybox:esgz", bundle + "/rootfs"], root: root)
        defer { _ = try? lazypull(["umount", bundle + "/rootfs"], root: root, check: false) }
        #expect(try runEchoOK(bundle: bundle, scratch: tmp.path) == "ok\n")
    }
}

/// Runs `/bin/sh -c 'echo ok'` with runc in `bundle` (whose rootfs is mounted) and returns stdout.
func runEchoOK(bundle: String, scratch: String) throws -> String {
    try run(["runc", "spec", "--bundle", bundle])
    let configPath = bundle + "/config.json"
    var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as! [String: Any]
    var process = config["process"] as! [String: Any]
    process["terminal"] = false
    process["args"] = ["/bin/sh", "-c", "echo ok"]
    config["process"] = process
    try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))
    let id = "lazypull-test-\(getpid())-\(Int.random(in: 0..<1_000_000))"
    defer { _ = try? run(["runc", "--root", scratch + "/runc", "delete", "--force", id], check: false) }
    return try run(["runc", "--root", scratch + "/runc", "run", "--bundle", bundle, id]).stdout
}
