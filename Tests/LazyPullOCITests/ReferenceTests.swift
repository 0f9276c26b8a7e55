import LazyPullOCI
import Testing

@Suite("Reference parsing and normalization")
struct ReferenceTests {
    static let valid: [(String, String, String, Bool)] = [
        // input, normalized, api host, loopback
        ("ubuntu", "docker.io/library/ubuntu:latest", "registry-1.docker.io", false),
        ("ubuntu:22.04", "docker.io/library/ubuntu:22.04", "registry-1.docker.io", false),
        ("library/ubuntu", "docker.io/library/ubuntu:latest", "registry-1.docker.io", false),
        ("docker.io/ubuntu", "docker.io/library/ubuntu:latest", "registry-1.docker.io", false),
        ("index.docker.io/library/ubuntu:1", "docker.io/library/ubuntu:1", "registry-1.docker.io", false),
        ("bitnami/redis", "docker.io/bitnami/redis:latest", "registry-1.docker.io", false),
        ("quay.io/coreos/etcd:v3.5.0", "quay.io/coreos/etcd:v3.5.0", "quay.io", false),
        ("localhost/app", "localhost/app:latest", "localhost", true),
        ("localhost:5000/a/b/c:tag_1.2-x", "localhost:5000/a/b/c:tag_1.2-x", "localhost:5000", true),
        ("127.0.0.1:5000/img", "127.0.0.1:5000/img:latest", "127.0.0.1:5000", true),
        ("127.1.2.3:80/x/y:z", "127.1.2.3:80/x/y:z", "127.1.2.3:80", true),
        ("[::1]:5000/img:t", "[::1]:5000/img:t", "[::1]:5000", true),
        ("registry.example.com/a__b/c.d/e-f---g:T", "registry.example.com/a__b/c.d/e-f---g:T", "registry.example.com", false),
        ("ubuntu@sha256:" + String(repeating: "a", count: 64),
         "docker.io/library/ubuntu@sha256:" + String(repeating: "a", count: 64), "registry-1.docker.io", false),
        ("ubuntu:22.04@sha256:" + String(repeating: "b", count: 64),
         "docker.io/library/ubuntu:22.04@sha256:" + String(repeating: "b", count: 64), "registry-1.docker.io", false),
    ]

    @Test(arguments: valid)
    func normalizes(input: String, normalized: String, apiHost: String, loopback: Bool) throws {
        let ref = try Reference(parsing: input)
        #expect(ref.description == normalized)
        #expect(ref.apiHost == apiHost)
        #expect(ref.isLoopback == loopback)
    }

    static let invalid: [(String, String)] = [
        ("", "empty reference"),
        ("Ubuntu", "must be lowercase"),
        ("docker.io/Library/ubuntu", "must be lowercase"),
        ("ubuntu:", "invalid tag"),
        ("ubuntu:-tag", "invalid tag"),
        ("ubuntu:" + String(repeating: "t", count: 129), "invalid tag"),
        ("ubuntu@sha256:abc", "64 lowercase hex digits"),
        ("ubuntu@md5:" + String(repeating: "a", count: 32), "unsupported digest algorithm"),
        ("ubuntu@", "missing algorithm"),
        ("a//b", "empty path component"),
        ("-abc", "invalid path component"),
        ("abc-", "invalid path component"),
        ("a..b", "invalid path component"),
        ("a___b", "invalid path component"),
        ("my image", "whitespace"),
        ("host:99999/img", "invalid registry host"),
        ("-host.com/img", "invalid registry host"),
        (":tag", "missing repository name"),
        ("example.com/" + String(repeating: "a", count: 260), "longer than 255"),
    ]

    @Test(arguments: invalid)
    func rejects(input: String, reason: String) {
        #expect {
            try Reference(parsing: input)
        } throws: { error in
            guard let e = error as? LazyPullError else { return false }
            return e.code == .invalidReference && e.message.contains(reason) && e.message.contains("\"\(input)\"")
        }
    }
}

@Suite("Loopback detection by address")
struct LoopbackTests {
    /// host as it appears in a reference (port stripped by the caller), loopback?
    static let hosts: [(String, Bool)] = [
        ("localhost", true),
        ("127.0.0.1", true),
        ("127.255.255.255", true),
        ("127.1.2.3", true),
        ("[::1]", true),
        ("::1", true),
        ("[0:0:0:0:0:0:0:1]", true),
        ("[0000:0000::0001]", true),
        ("[::0:1]", true),
        // Not loopback: names that look like it, short or odd forms, other addresses.
        ("127.evil.example", false),
        ("127.0.0.1.evil.example", false),
        ("127.0.0.1.", false),
        ("127.1", false),
        ("127.0.1", false),
        ("127.0.0.1.1", false),
        ("127.0.0.256", false),
        ("127.0.0.-1", false),
        ("127.0.0.01", false),
        ("0127.0.0.1", false),
        ("127.0.0.0x1", false),
        ("127..0.1", false),
        ("128.0.0.1", false),
        ("10.0.0.1", false),
        ("2130706433", false),
        ("localhost.", false),
        ("localhost.evil.example", false),
        ("mylocalhost", false),
        ("[::2]", false),
        ("[::]", false),
        ("[::1", false),
        ("::1]", false),
        ("[1::1]", false),
        ("[::1::1]", false),
        ("[::ffff:7f00:1]", false),
        ("[0:0:0:0:0:0:0:0:1]", false),
        ("[00000::1]", false),
        ("", false),
    ]

    @Test(arguments: hosts)
    func detects(host: String, loopback: Bool) {
        #expect(Reference.isLoopbackHost(host) == loopback)
    }

    @Test(arguments: [("127.evil.example/img", false), ("127.evil.example:5000/img", false), ("127.0.0.1:5000/img", true),
                      ("[::1]:5000/img", true), ("localhost:5000/img", true), ("127.0.0.1.nip.io/img", false)])
    func referenceHost(input: String, loopback: Bool) throws {
        #expect(try Reference(parsing: input).isLoopback == loopback)
    }
}

@Suite("Digests")
struct DigestTests {
    @Test func sha256OfKnownInput() {
        #expect(Digest.sha256(of: Array("abc".utf8)).description
                == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test(arguments: ["sha256:ABC", "sha256:" + String(repeating: "g", count: 64), "nocolon", "sha1:abcd"])
    func rejectsMalformed(input: String) {
        #expect(throws: LazyPullError.self) { try Digest(parsing: input) }
    }

    @Test func chainIDs() throws {
        let a = try Digest(parsing: "sha256:" + String(repeating: "1", count: 64))
        let b = try Digest(parsing: "sha256:" + String(repeating: "2", count: 64))
        let chain = ChainID.chain([a, b])
        #expect(chain[0] == a)
        #expect(chain[1] == Digest.sha256(of: Array("\(a) \(b)".utf8)))
    }
}

@Suite("Platforms")
struct PlatformTests {
    static let parsing: [(String, String)] = [
        ("linux/amd64", "linux/amd64"), ("linux/x86_64", "linux/amd64"), ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"), ("linux/arm", "linux/arm/v7"), ("linux/armhf", "linux/arm/v7"),
        ("Linux/ARM64", "linux/arm64"),
    ]

    @Test(arguments: parsing)
    func parses(input: String, normalized: String) throws {
        #expect(try Platform(parsing: input).description == normalized)
    }

    @Test(arguments: ["linux", "linux/", "/amd64", "a/b/c/d"])
    func rejects(input: String) {
        #expect(throws: LazyPullError.self) { try Platform(parsing: input) }
    }

    static func descriptor(_ platform: String, _ n: Character) throws -> Descriptor {
        Descriptor(mediaType: MediaType.ociManifest, digest: try Digest(parsing: "sha256:" + String(repeating: n, count: 64)),
                   size: 1, platform: try Platform(parsing: platform))
    }

    @Test func matcherPrefersExactThenCompatibleVariant() throws {
        let list = [try Self.descriptor("linux/arm/v6", "1"), try Self.descriptor("linux/arm/v7", "2"),
                    try Self.descriptor("linux/amd64", "3"), try Self.descriptor("windows/amd64", "4")]
        #expect(PlatformMatcher(try Platform(parsing: "linux/arm/v7")).best(list)?.digest == list[1].digest)
        #expect(PlatformMatcher(try Platform(parsing: "linux/arm/v8")).best(list)?.digest == list[1].digest)
        #expect(PlatformMatcher(try Platform(parsing: "linux/arm/v6")).best(list)?.digest == list[0].digest)
        #expect(PlatformMatcher(try Platform(parsing: "linux/amd64")).best(list)?.digest == list[2].digest)
        #expect(PlatformMatcher(try Platform(parsing: "linux/arm/v5")).best(list) == nil)
        #expect(PlatformMatcher(try Platform(parsing: "linux/s390x")).best(list) == nil)
    }
}

@Suite("Manifest documents")
struct ManifestTests {
    static let hex = String(repeating: "a", count: 64)

    @Test func refusesSchema1() {
        let body = Array(#"{"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}"#.utf8)
        #expect { try ManifestDocument.decode(body, contentType: MediaType.dockerSchema1Signed, what: "x") } throws: {
            ($0 as? LazyPullError)?.code == .schema1Unsupported
        }
    }

    @Test func decodesIndexAndManifest() throws {
        let index = #"{"schemaVersion":2,"mediaType":"\#(MediaType.ociIndex)","manifests":[{"mediaType":"\#(MediaType.ociManifest)","digest":"sha256:\#(Self.hex)","size":7,"platform":{"os":"linux","architecture":"arm64"}}]}"#
        guard case .index(let i) = try ManifestDocument.decode(Array(index.utf8), contentType: nil, what: "x") else {
            Issue.record("not an index"); return
        }
        #expect(i.manifests.first?.platform == Platform(os: "linux", architecture: "arm64"))
        let manifest = #"{"schemaVersion":2,"config":{"mediaType":"\#(MediaType.ociConfig)","digest":"sha256:\#(Self.hex)","size":2},"layers":[]}"#
        guard case .manifest(let m) = try ManifestDocument.decode(Array(manifest.utf8), contentType: MediaType.ociManifest, what: "x") else {
            Issue.record("not a manifest"); return
        }
        #expect(m.layers.isEmpty)
    }

    static let malformed: [(String, String)] = [
        ("not json", "not valid JSON"),
        (#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#, "missing field \"config\""),
        (#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#, "digest"),
        (#"{"schemaVersion":2,"mediaType":"application/x-unknown","config":{}}"#, "unsupported manifest media type"),
    ]

    @Test(arguments: malformed)
    func rejectsMalformed(body: String, reason: String) {
        #expect { try ManifestDocument.decode(Array(body.utf8), contentType: nil, what: "img") } throws: {
            guard let e = $0 as? LazyPullError else { return false }
            return e.message.contains(reason) && e.message.contains("img")
        }
    }
}
