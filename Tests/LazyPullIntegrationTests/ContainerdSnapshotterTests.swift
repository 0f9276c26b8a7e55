import Foundation
import Testing

/// `lazypull serve` as containerd's proxy snapshotter (Debian's containerd 1.6 with a
/// `[proxy_plugins.lazypull]` entry), driven by `ctr` and `ctr-remote`.
@Suite("containerd proxy snapshotter", .serialized)
struct ContainerdSnapshotterTests {
    /// A registry holding a busybox image (gzip and eStargz, two layers: busybox and
    /// /hello.txt, then /data.bin and /second.txt), a fault proxy counting what the registry
    /// serves, `lazypull serve` and a containerd that uses it.
    final class Setup {
        let tmp: TemporaryDirectory
        let registry: TestRegistry
        let proxy: BackgroundProcess
        let proxyHost: String
        let proxyLog: String
        let root: String
        let socket: String
        let config: String
        var serve: BackgroundProcess?
        let containerd: TestContainerd

        init(_ label: String) throws {
            tmp = try TemporaryDirectory(label)
            registry = try TestRegistry(in: tmp.path)
            try run(["make-busybox-image.sh", registry.host, "bb:v1", "8"])
            do {
                let converter = try TestContainerd(in: tmp.path, name: "converter")
                try run(["convert-image.sh", converter.socket, "\(registry.host)/bb:v1", "\(registry.host)/bb:esgz", "estargz"])
            }
            let port = freePort()
            proxyHost = "127.0.0.1:\(port)"
            proxyLog = tmp.path + "/proxy.log"
            proxy = try faultProxy(port: port, upstream: registry.host, log: proxyLog, in: tmp.path)
            root = tmp.path + "/root"
            socket = tmp.path + "/lazypull.sock"
            config = tmp.path + "/config.toml"
            // Nothing fetched behind the test's back; a read that cannot be fetched fails fast.
            try "[fetch]\nbackground = false\ntimeout_seconds = 3\n".write(toFile: config, atomically: true, encoding: .utf8)
            serve = try Self.serve(root: root, config: config, socket: socket, log: tmp.path + "/serve.log")
            containerd = try TestContainerd(in: tmp.path, proxySnapshotter: ("lazypull", socket))
        }

        /// Starts `lazypull serve` again and waits (bounded) until containerd has reconnected:
        /// its proxy client backs off up to 3 s between dials after the old process went away.
        func restartServe() throws {
            serve = try Self.serve(root: root, config: config, socket: socket, log: tmp.path + "/serve.log")
            let deadline = Date().addingTimeInterval(30)
            while try !containerd.ctr(["snapshots", "--snapshotter", "lazypull", "ls"], check: false).succeeded {
                guard Date() < deadline else { throw CommandFailed(command: ["ctr", "snapshots", "ls"], result: .init(status: 1, stdout: "", stderr: "containerd did not reconnect")) }
                Thread.sleep(forTimeInterval: 0.2)
            }
        }

        static func serve(root: String, config: String, socket: String, log: String) throws -> BackgroundProcess {
            try? FileManager.default.removeItem(atPath: socket)
            return try BackgroundProcess([Paths.lazypull, "serve", "--root", root, "--config", config, "--address", socket],
                                         readyFile: socket, log: log)
        }

        /// The end of the layer host's log and the control plane's, for a failure's message.
        var hostLog: String {
            [root + "/run/fuse-host.log", tmp.path + "/serve.log"].map {
                ((try? String(contentsOfFile: $0, encoding: .utf8)) ?? "").suffix(3000) + "\n"
            }.joined(separator: "--\n")
        }

        /// Bytes of blobs the registry served through the proxy.
        var blobBytesServed: Int {
            logLines(proxyLog).filter { ($0["path"] as? String)?.contains("/blobs/") ?? false }
                .compactMap { $0["bytes_sent"] as? Int }.reduce(0, +)
        }

        /// Compressed size of the image's layers.
        func layerBytes(_ tag: String) throws -> Int {
            let manifest = try run(["curl", "-sf", "-H", "Accept: application/vnd.oci.image.manifest.v1+json",
                                    "http://\(registry.host)/v2/bb/manifests/\(tag)"]).stdout
            let json = try JSONSerialization.jsonObject(with: Data(manifest.utf8)) as? [String: Any]
            return (json?["layers"] as? [[String: Any]] ?? []).compactMap { $0["size"] as? Int }.reduce(0, +)
        }
    }

    @Test("rpull + run reads lazily through FUSE layers; `ctr images pull` + run works as a plain overlay snapshotter; image removal and GC leave nothing behind")
    func pullRunRemove() throws {
        let setup = try Setup("ctd")
        let lazyRef = "\(setup.proxyHost)/bb:esgz"
        try setup.containerd.ctr(["images", "rpull", "--plain-http", "--snapshotter", "lazypull", lazyRef], tool: "ctr-remote")
        let out = try setup.containerd.ctr(["run", "--rm", "--snapshotter", "lazypull", lazyRef, "lazypull-lazy1-\(getpid())", "cat", "/hello.txt"])
        #expect(out.stdout == "hello from lazypull\n")
        #expect(fuseMounts(under: setup.root) == 2, "both layers are FUSE mounts; the layer host's log:\n\(setup.hostLog)")
        let served = setup.blobBytesServed
        let size = try setup.layerBytes("esgz")
        #expect(served < size / 2, "registry served \(served) of \(size) bytes")
        print("containerd rpull + run cat /hello.txt: registry served \(served) of \(size) layer bytes")

        // Without the remote labels lazypull is an ordinary overlay snapshotter.
        let plainRef = "\(setup.registry.host)/bb:v1"
        try setup.containerd.ctr(["images", "pull", "--plain-http", "--snapshotter", "lazypull", plainRef])
        let plain = try setup.containerd.ctr(["run", "--rm", "--snapshotter", "lazypull", plainRef, "lazypull-plain1-\(getpid())", "cat", "/second.txt"])
        #expect(plain.stdout == "second layer\n")
        let listed = try setup.containerd.ctr(["snapshots", "--snapshotter", "lazypull", "ls"]).stdout
        #expect(listed.split(separator: "\n").count == 5, "header, 2 remote and 2 unpacked layers:\n\(listed)")

        // containerd's GC removes every snapshot; lazypull unmounts the layers and frees their cache.
        try setup.containerd.ctr(["images", "rm", "--sync", lazyRef, plainRef])
        let after = try setup.containerd.ctr(["snapshots", "--snapshotter", "lazypull", "ls"]).stdout
        #expect(after.split(separator: "\n").count <= 1, "snapshots left:\n\(after)")
        #expect(fuseMounts(under: setup.root) == 0)
        let cache = (try? FileManager.default.contentsOfDirectory(atPath: setup.root + "/cache/sha256")) ?? []
        #expect(cache.isEmpty, "cache left: \(cache)")
        let dirs = try FileManager.default.contentsOfDirectory(atPath: setup.root + "/snapshots").filter { $0 != "locks" }
        #expect(dirs.isEmpty, "snapshot directories left: \(dirs)")
    }

    @Test("a container keeps reading across a restart of serve; after SIGKILL and a start without the registry, fetched files read and unfetched ones fail with EIO (the running container after a SIGKILL of serve, a new one after a SIGKILL of every lazypull process)")
    func restarts() throws {
        let setup = try Setup("ctdrestart")
        let ref = "\(setup.proxyHost)/bb:esgz"
        let ctr = setup.containerd
        // runc's state is per host, not per containerd: names unique to this run.
        let (c1, c2, c3) = ["c1", "c2", "c3"].map { "lazypull-\($0)-\(getpid())" }.tuple3
        try ctr.ctr(["images", "rpull", "--plain-http", "--snapshotter", "lazypull", ref], tool: "ctr-remote")
        try ctr.ctr(["run", "-d", "--snapshotter", "lazypull", ref, c1, "/bin/busybox", "sleep", "1000"])
        defer {
            _ = try? ctr.ctr(["task", "kill", "-s", "KILL", c1], check: false)
            _ = try? ctr.ctr(["task", "delete", "-f", c1], check: false)
            _ = try? ctr.ctr(["containers", "delete", c1], check: false)
        }
        #expect(try ctr.ctr(["task", "exec", "--exec-id", "e1", c1, "cat", "/hello.txt"]).stdout == "hello from lazypull\n")

        // SIGTERM and a new start: the layer host and its mounts carry on; a file not read
        // before is fetched now.
        let controlPlanes = processes(root: setup.root, command: "serve")
        #expect(controlPlanes.count == 1)
        setup.serve?.stop()
        #expect(processes(root: setup.root, command: "serve").isEmpty)
        #expect(processes(root: setup.root, command: "fuse-host").count == 1)
        try setup.restartServe()
        #expect(try ctr.ctr(["task", "exec", "--exec-id", "e2", c1, "cat", "/second.txt"]).stdout == "second layer\n")

        // The registry gone and the control plane SIGKILLed: after a new start, the running
        // container still reads what was fetched, and an unfetched file fails with EIO.
        setup.proxy.stop()
        try run(["registry.sh", "stop", setup.registry.dir])
        for pid in processes(root: setup.root, command: "serve") { kill(pid, SIGKILL) }
        setup.serve?.stop()
        try setup.restartServe()
        #expect(try ctr.ctr(["task", "exec", "--exec-id", "e3", c1, "cat", "/hello.txt", "/second.txt"]).stdout
                == "hello from lazypull\nsecond layer\n")
        let missing = try ctr.ctr(["task", "exec", "--exec-id", "e4", c1, "cat", "/data.bin"], check: false)
        #expect(!missing.succeeded && missing.stderr.contains("Input/output error"), "\(missing.stderr)")

        // Every lazypull process killed, layer host included: the next start serves the
        // snapshots again from local state before it answers containerd.
        killProcesses(using: setup.root)
        setup.serve?.stop()
        try setup.restartServe()
        let fetched = try ctr.ctr(["run", "--rm", "--snapshotter", "lazypull", ref, c2, "cat", "/hello.txt", "/second.txt"])
        #expect(fetched.stdout == "hello from lazypull\nsecond layer\n")
        let unfetched = try ctr.ctr(["run", "--rm", "--snapshotter", "lazypull", ref, c3, "cat", "/data.bin"], check: false)
        #expect(!unfetched.succeeded)
        #expect(unfetched.stdout.isEmpty && unfetched.stderr.contains("Input/output error"), "\(unfetched.stderr)")
        // The container that ran through the kill is not left hanging either: its reads of
        // content not in the page cache fail (its FUSE connection died with the host).
        let old = try ctr.ctr(["task", "exec", "--exec-id", "e5", c1, "cat", "/data.bin"], check: false)
        #expect(!old.succeeded)
    }
}

extension Array {
    var tuple3: (Element, Element, Element) { (self[0], self[1], self[2]) }
}
