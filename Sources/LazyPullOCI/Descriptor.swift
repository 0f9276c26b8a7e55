/// A content descriptor (OCI image spec, descriptor.md).
public struct Descriptor: Hashable, Sendable, Codable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var urls: [String]?
    public var annotations: [String: String]?
    public var platform: Platform?

    public init(mediaType: String, digest: Digest, size: Int64,
                annotations: [String: String]? = nil, platform: Platform? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.platform = platform
    }

    enum CodingKeys: String, CodingKey { case mediaType, digest, size, urls, annotations, platform }

    /// Decodes a descriptor from an untrusted document: `size` must be a non-negative
    /// integer (descriptor.md: "the size, in bytes, of the raw content"), so every later
    /// offset and sum over it starts from a value that cannot be negative.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        mediaType = try c.decode(String.self, forKey: .mediaType)
        digest = try c.decode(Digest.self, forKey: .digest)
        size = try c.decode(Int64.self, forKey: .size)
        guard size >= 0 else {
            throw DecodingError.dataCorruptedError(forKey: .size, in: c, debugDescription: "negative size \(size)")
        }
        urls = try c.decodeIfPresent([String].self, forKey: .urls)
        annotations = try c.decodeIfPresent([String: String].self, forKey: .annotations)
        platform = try c.decodeIfPresent(Platform.self, forKey: .platform)
    }
}

/// A platform an image runs on (OCI image spec, image-index.md "platform").
public struct Platform: Hashable, Sendable, Codable, CustomStringConvertible {
    public var os: String
    public var architecture: String
    public var variant: String?
    public var osVersion: String?

    enum CodingKeys: String, CodingKey {
        case os, architecture, variant
        case osVersion = "os.version"
    }

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// Parses `os/arch[/variant]`, normalizing architecture aliases as containerd does.
    public init(parsing string: String) throws {
        let parts = string.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else {
            throw LazyPullError(.invalidArgument, "invalid platform \"\(string)\": want os/arch[/variant]")
        }
        self = Platform(os: parts[0].lowercased(), architecture: parts[1].lowercased(),
                        variant: parts.count == 3 ? parts[2].lowercased() : nil).normalized
    }

    public var description: String {
        [os, architecture, variant].compactMap { $0 }.joined(separator: "/")
    }

    /// Architecture and variant in containerd's canonical spelling
    /// (`x86_64` → `amd64`, `aarch64` → `arm64`, `arm64/v8` → `arm64`, `arm` → `arm/v7`).
    public var normalized: Platform {
        var p = self
        switch p.architecture {
        case "x86_64", "x86-64", "amd64":
            p.architecture = "amd64"
            if p.variant == "v1" { p.variant = nil }
        case "aarch64", "arm64":
            p.architecture = "arm64"
            if p.variant == "v8" || p.variant == "8" { p.variant = nil }
        case "armhf": p.architecture = "arm"; p.variant = "v7"
        case "armel": p.architecture = "arm"; p.variant = "v6"
        case "arm":
            if p.variant == nil || p.variant == "7" { p.variant = "v7" }
            else if p.variant == "5" || p.variant == "6" || p.variant == "8" { p.variant = "v" + p.variant! }
        case "i386", "i686", "386": p.architecture = "386"
        default: break
        }
        return p
    }

    /// The platform of this host.
    public static var host: Platform {
        #if arch(x86_64)
        Platform(os: "linux", architecture: "amd64")
        #elseif arch(arm64)
        Platform(os: "linux", architecture: "arm64")
        #else
        Platform(os: "linux", architecture: "unknown")
        #endif
    }
}

/// Chooses among the platforms of an index the way containerd's default matcher does:
/// OS and architecture must match; a wanted variant accepts itself or an older compatible
/// variant (arm v8 runs v7/v6/v5, amd64 v3 runs v2/v1), preferring the closest.
public struct PlatformMatcher: Sendable {
    public let wanted: Platform

    public init(_ wanted: Platform) { self.wanted = wanted.normalized }

    /// Returns a rank (lower is better) when `candidate` can run here, else nil.
    public func rank(_ candidate: Platform) -> Int? {
        let c = candidate.normalized
        guard c.os == wanted.os, c.architecture == wanted.architecture else { return nil }
        if c.variant == wanted.variant { return 0 }
        let order: [String]
        switch wanted.architecture {
        case "arm": order = ["v8", "v7", "v6", "v5"]
        case "amd64": order = ["v4", "v3", "v2", "v1"]
        case "arm64": order = ["v9", "v8"]
        default: return wanted.variant == nil ? 1 : nil
        }
        let wantedIndex = order.firstIndex(of: wanted.variant ?? (wanted.architecture == "arm" ? "v7" : order.last!)) ?? order.count - 1
        guard let candidateIndex = order.firstIndex(of: c.variant ?? order.last!), candidateIndex >= wantedIndex else {
            return nil
        }
        return 1 + candidateIndex - wantedIndex
    }

    /// The best match among `descriptors`, or nil.
    public func best(_ descriptors: [Descriptor]) -> Descriptor? {
        var best: (Int, Descriptor)?
        for d in descriptors {
            guard let p = d.platform, let r = rank(p) else { continue }
            if best == nil || r < best!.0 { best = (r, d) }
        }
        return best?.1
    }
}
