import LazyPullOCI
import Testing
@testable import LazyPullService

/// containerd list filters (the `filters` package syntax) as containerd's metadata layer
/// sends them to a proxy snapshotter.
struct SnapshotFilterTests {
    static let remote = SnapshotFilter.Fields(
        name: "remote/sha256:aa", parent: "remote/sha256:bb", kind: "committed",
        labels: ["containerd.io/snapshot.ref": "sha256:aa", "containerd.io/snapshot/lazypull.remote-layer": "sha256:cc"])
    static let active = SnapshotFilter.Fields(name: "default/7/run-1", parent: "remote/sha256:aa", kind: "active", labels: [:])

    @Test(arguments: [
        // What containerd sends after a remote Prepare answered "already exists".
        (#"labels."containerd.io/snapshot.ref"==sha256:aa,parent=="remote/sha256:bb""#, true, false),
        (#"labels."containerd.io/snapshot.ref"==sha256:aa,parent=="""#, false, false),
        ("kind==committed", true, false),
        ("kind!=committed", false, true),
        ("name~=^default/", false, true),
        (#"labels."containerd.io/snapshot.ref""#, true, false),
        ("parent==remote/sha256:aa", false, true),
        ("  kind == active  ", false, true),
        (#"name=="default/7/run-1""#, false, true),
        ("labels.absent!=x", true, true),
        ("", true, true),
    ])
    func matches(filter: String, remote: Bool, active: Bool) throws {
        let parsed = try SnapshotFilter(parsing: filter)
        #expect(parsed.matches(Self.remote) == remote)
        #expect(parsed.matches(Self.active) == active)
    }

    @Test(arguments: [
        #"labels."unterminated==x"#,
        "kind==",
        ",kind==active",
        "kind==active,",
        "kind==active extra",
        "==x",
    ])
    func rejects(filter: String) {
        #expect(throws: LazyPullError.self) { try SnapshotFilter(parsing: filter) }
    }

    @Test func anyOfSeveral() throws {
        let filters = try ["kind==view", "name==remote/sha256:aa"].map(SnapshotFilter.init(parsing:))
        #expect(SnapshotFilter.matchesAny(filters, Self.remote))
        #expect(!SnapshotFilter.matchesAny(filters, Self.active))
        #expect(SnapshotFilter.matchesAny([], Self.active))
    }
}

/// The remote snapshot handshake's labels: CRI's and stargz-snapshotter's.
struct RemoteLayerRequestTests {
    static let a = "sha256:" + String(repeating: "a", count: 64)
    static let b = "sha256:" + String(repeating: "b", count: 64)

    @Test func criLabels() throws {
        let request = try #require(RemoteLayerRequest(labels: [
            "containerd.io/snapshot.ref": "sha256:chain",
            "containerd.io/snapshot/cri.image-ref": "127.0.0.1:5000/python:esgz",
            "containerd.io/snapshot/cri.layer-digest": Self.a,
            "containerd.io/snapshot/cri.image-layers": "\(Self.b),\(Self.a)",
        ]))
        #expect(request.target == "sha256:chain")
        #expect(request.reference == "127.0.0.1:5000/python:esgz")
        #expect(request.layer.description == Self.a)
        #expect(request.imageLayers.map(\.description) == [Self.b, Self.a])
    }

    @Test func stargzLabels() throws {
        let request = try #require(RemoteLayerRequest(labels: [
            "containerd.io/snapshot.ref": "sha256:chain",
            "containerd.io/snapshot/remote/stargz.reference": "example.com/app:1",
            "containerd.io/snapshot/remote/stargz.digest": Self.b,
        ]))
        #expect(request.reference == "example.com/app:1")
        #expect(request.imageLayers.isEmpty)
    }

    @Test(arguments: [
        // No target: an ordinary Prepare.
        ["containerd.io/snapshot/cri.image-ref": "a/b:c", "containerd.io/snapshot/cri.layer-digest": a],
        // A target, but nothing says where the layer is (`ctr images pull`).
        ["containerd.io/snapshot.ref": "sha256:chain"],
        // A malformed digest.
        ["containerd.io/snapshot.ref": "sha256:chain", "containerd.io/snapshot/cri.image-ref": "a/b:c",
         "containerd.io/snapshot/cri.layer-digest": "sha256:xyz"],
    ])
    func notRemote(labels: [String: String]) {
        #expect(RemoteLayerRequest(labels: labels) == nil)
    }
}
