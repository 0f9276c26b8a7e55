import Foundation
import Testing

/// Local users are not trusted (docs/security.md): an unpacked layer holds an untrusted
/// image's setuid binaries and device nodes, and a lazy layer's cache its private files.
/// Nothing under the state root may be listed, opened or executed by them.
@Suite("Local users", .serialized)
struct LocalUserTests {
    @Test("as nobody, nothing under the state root can be listed, opened or executed (eager and lazy mounts)")
    func nobodyReachesNothing() throws {
        let tmp = try TemporaryDirectory("local-user")
        // mkdtemp made it 0700: open it up, so that only the state root's own modes protect it.
        chmod(tmp.path, 0o755)
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-busybox-image.sh", registry.host, "busybox:v1"])
        let root = tmp.path + "/root"
        let plain = "\(registry.host)/busybox:v1"
        let lazyRef = "\(registry.host)/busybox:esgz"
        try lazypull(["convert", "--estargz", plain, lazyRef], root: root)
        let eager = tmp.path + "/eager", lazy = tmp.path + "/lazy"
        try lazypull(["mount", "--eager", "--quiet", plain, eager], root: root)
        defer { _ = try? lazypull(["umount", eager], root: root, check: false) }
        try lazypull(["mount", "--quiet", lazyRef, lazy], root: root)
        defer { _ = try? lazypull(["umount", lazy], root: root, check: false) }
        // Read through the lazy mount so its cache holds data.
        #expect(try String(contentsOfFile: lazy + "/hello.txt", encoding: .utf8) == "hello from lazypull\n")

        // Every path under the root (as root sees them, through the FUSE mounts too), bounded.
        let paths = try run(["find", root, "-maxdepth", "7"]).stdout.split(separator: "\n").map(String.init)
        #expect(paths.contains { $0.hasSuffix("/fs/bin/busybox") }, "the walk saw no unpacked layer")
        #expect(paths.contains { $0.contains("/cache/") }, "the walk saw no lazy cache")
        #expect(paths.contains { $0.contains("/blobs/sha256/") }, "the walk saw no blob")
        let list = tmp.path + "/paths.txt"
        try (paths.joined(separator: "\n") + "\n").write(toFile: list, atomically: true, encoding: .utf8)
        chmod(list, 0o644)

        // As nobody: each path must refuse listing, opening and executing.
        let probe = """
        import os, sys
        reached = []
        for p in open(sys.argv[1]).read().split("\\n"):
            if not p or p == sys.argv[2]:
                continue
            for what, attempt in (("list", lambda: os.listdir(p)), ("open", lambda: os.close(os.open(p, os.O_RDONLY))),
                                  ("stat", lambda: os.lstat(p))):
                try:
                    attempt()
                    reached.append(what + " " + p)
                except OSError:
                    pass
            if os.access(p, os.X_OK) and not os.path.isdir(p):
                reached.append("exec " + p)
        # The root itself: not listable, and not traversable.
        for what, attempt in (("list", lambda: os.listdir(sys.argv[2])), ("open", lambda: os.listdir(sys.argv[2] + "/snapshots"))):
            try:
                attempt()
                reached.append(what + " " + sys.argv[2])
            except OSError:
                pass
        print("\\n".join(reached))
        """
        let result = try run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                              "/usr/bin/python3", "-c", probe, list, root])
        let reached = result.stdout.split(separator: "\n")
        #expect(reached.isEmpty, "nobody reached \(reached.count) paths, e.g. \(reached.prefix(5))")

        // The mounts themselves stay usable: they are what a container sees.
        let viaMount = try run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                                "cat", lazy + "/hello.txt"])
        #expect(viaMount.stdout == "hello from lazypull\n")
    }

    @Test("a state root made 0711 by an older version is tightened when opened")
    func existingRootTightened() throws {
        let tmp = try TemporaryDirectory("tighten")
        let root = tmp.path + "/root"
        for dir in ["", "/snapshots", "/content/blobs/sha256"] {
            try FileManager.default.createDirectory(atPath: root + dir, withIntermediateDirectories: true)
        }
        chmod(root, 0o711)
        chmod(root + "/snapshots", 0o755)
        FileManager.default.createFile(atPath: root + "/content/blobs/sha256/" + String(repeating: "a", count: 64),
                                       contents: Data("x".utf8), attributes: [.posixPermissions: 0o644])
        try lazypull(["images"], root: root)
        func mode(_ path: String) -> mode_t {
            var st = stat()
            return stat(path, &st) == 0 ? st.st_mode & 0o7777 : 0
        }
        #expect(mode(root) == 0o700)
        #expect(mode(root + "/snapshots") == 0o700)
        #expect(mode(root + "/content/blobs/sha256/" + String(repeating: "a", count: 64)) == 0o600)
    }
}
