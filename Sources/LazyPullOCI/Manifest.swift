import Foundation

/// An image manifest (OCI image spec manifest.md; Docker image manifest v2 schema 2).
public struct Manifest: Sendable, Codable, Equatable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var annotations: [String: String]?

    public init(config: Descriptor, layers: [Descriptor], mediaType: String = MediaType.ociManifest,
                annotations: [String: String]? = nil) {
        self.schemaVersion = 2
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }

    enum CodingKeys: String, CodingKey { case schemaVersion, mediaType, config, layers, annotations }

    /// Decodes an untrusted manifest: besides each descriptor's own checks, the layers' sizes
    /// must add up to a number that fits (a pull's total and progress are that sum).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schemaVersion = try c.decode(Int.self, forKey: .schemaVersion)
        mediaType = try c.decodeIfPresent(String.self, forKey: .mediaType)
        config = try c.decode(Descriptor.self, forKey: .config)
        layers = try c.decode([Descriptor].self, forKey: .layers)
        annotations = try c.decodeIfPresent([String: String].self, forKey: .annotations)
        guard Self.totalSize(of: layers) != nil else {
            throw DecodingError.dataCorruptedError(forKey: .layers, in: c,
                                                   debugDescription: "layer sizes add up to more than \(Int64.max) bytes")
        }
    }

    /// The sum of `layers`' sizes, or nil when it does not fit in an Int64.
    public static func totalSize(of layers: [Descriptor]) -> Int64? {
        var total: Int64 = 0
        for layer in layers {
            let (sum, overflow) = total.addingReportingOverflow(layer.size)
            guard !overflow else { return nil }
            total = sum
        }
        return total
    }

    /// The compressed size of every layer together (checked when the manifest was decoded).
    public var layersSize: Int64 { Self.totalSize(of: layers) ?? Int64.max }
}

/// An image index or Docker manifest list (OCI image spec image-index.md).
public struct Index: Sendable, Codable, Equatable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
    public var annotations: [String: String]?
}

/// The parts of an image configuration lazypull needs (OCI image spec config.md).
public struct ImageConfig: Sendable, Codable, Equatable {
    public struct RootFS: Sendable, Codable, Equatable {
        public var type: String
        public var diffIDs: [Digest]
        enum CodingKeys: String, CodingKey {
            case type
            case diffIDs = "diff_ids"
        }
    }

    /// How a container of the image runs by default (config.md, `config`).
    public struct Execution: Sendable, Codable, Equatable {
        public var entrypoint: [String]?
        public var cmd: [String]?
        public var env: [String]?
        enum CodingKeys: String, CodingKey {
            case entrypoint = "Entrypoint", cmd = "Cmd", env = "Env"
        }
    }

    public var architecture: String?
    public var os: String?
    public var variant: String?
    public var rootfs: RootFS
    public var config: Execution?

    /// Where the program a container of this image runs by default may be: the first word
    /// of `Entrypoint`, else of `Cmd`; a bare name is looked up in the image's `PATH` (or the
    /// default one runtimes use). Empty when the image names no program.
    public var defaultProgramPaths: [String] {
        guard let program = (config?.entrypoint?.first ?? config?.cmd?.first), !program.isEmpty else { return [] }
        if program.hasPrefix("/") { return [program] }
        let path = config?.env?.first { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) }
            ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return path.split(separator: ":").filter { $0.hasPrefix("/") }.map { "\($0)/\(program)" }
    }

    /// What a container of this image opens first, for the prefetch at mount: its default
    /// program (``defaultProgramPaths``), the dynamic loader, and the files the GNU C library
    /// reads while any dynamically linked program starts: the loader's cache (ld.so(8)), the
    /// time zone (tzset(3)), the C.UTF-8 character map and the gconv module cache
    /// (setlocale(3), iconv(3)). Each is a round trip on the critical path otherwise. Empty
    /// when the image names no program.
    public var startupPaths: [String] {
        let program = defaultProgramPaths
        guard !program.isEmpty else { return [] }
        var paths = program
        let abi = Self.glibcABIs[architecture ?? ""]
        if let abi { paths.append(abi.loader) }
        paths += ["/etc/ld.so.cache", "/etc/localtime", "/usr/lib/locale/C.utf8/LC_CTYPE"]
        if let abi { paths.append("/usr/lib/\(abi.triplet)/gconv/gconv-modules.cache") }
        return paths
    }

    /// Per OCI architecture: the program interpreter's path in the psABI, and Debian's
    /// multiarch directory (https://wiki.debian.org/Multiarch/Tuples).
    static let glibcABIs: [String: (loader: String, triplet: String)] = [
        "amd64": ("/lib64/ld-linux-x86-64.so.2", "x86_64-linux-gnu"),
        "arm64": ("/lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu"),
        "arm": ("/lib/ld-linux-armhf.so.3", "arm-linux-gnueabihf"),
        "386": ("/lib/ld-linux.so.2", "i386-linux-gnu"),
        "ppc64le": ("/lib64/ld64.so.2", "powerpc64le-linux-gnu"),
        "s390x": ("/lib/ld64.so.1", "s390x-linux-gnu"),
        "riscv64": ("/lib/ld-linux-riscv64-lp64d.so.1", "riscv64-linux-gnu"),
    ]
}

/// A manifest-like document as it came from a registry: its bytes decide its digest.
public enum ManifestDocument: Sendable {
    case index(Index)
    case manifest(Manifest)

    /// Decodes `data` given the media type the registry reported (or the document's own
    /// `mediaType` when the header is generic). Schema 1 is refused.
    public static func decode(_ data: [UInt8], contentType: String?, what: String) throws -> ManifestDocument {
        /// Only what decides the document's kind; the full decode below validates the rest.
        struct Probe: Decodable {
            struct Present: Decodable { init(from decoder: Decoder) throws {} }
            var schemaVersion: Int?
            var mediaType: String?
            var manifests: Present?
        }
        let probe: Probe
        do {
            probe = try JSONDecoder().decode(Probe.self, from: Data(data))
        } catch {
            throw LazyPullError(.invalidManifest, "invalid manifest for \(what): \(Self.reason(error))")
        }
        if probe.schemaVersion == 1 || contentType.map(MediaType.isSchema1) == true && probe.schemaVersion != 2 {
            throw LazyPullError(.schema1Unsupported,
                                "\(what) is a Docker schema 1 manifest, which is deprecated and not supported; push it again with a current client")
        }
        let header = contentType?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) }
        let type = probe.mediaType ?? header.flatMap { MediaType.isIndex($0) || MediaType.isManifest($0) ? $0 : nil }
            ?? (probe.manifests != nil ? MediaType.ociIndex : MediaType.ociManifest)
        do {
            if MediaType.isIndex(type) {
                return .index(try JSONDecoder().decode(Index.self, from: Data(data)))
            } else if MediaType.isManifest(type) {
                return .manifest(try JSONDecoder().decode(Manifest.self, from: Data(data)))
            }
        } catch {
            throw LazyPullError(.invalidManifest, "invalid manifest for \(what): \(Self.reason(error))")
        }
        throw LazyPullError(.unsupportedMediaType, "unsupported manifest media type \"\(type)\" for \(what)")
    }

    /// A one-line explanation of a JSON decoding failure.
    public static func reason(_ error: Error) -> String {
        if let e = error as? LazyPullError { return e.message }
        switch error as? DecodingError {
        case .keyNotFound(let key, _)?: return "missing field \"\(key.stringValue)\""
        case .typeMismatch(_, let c)?, .valueNotFound(_, let c)?:
            return "wrong type at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case .dataCorrupted(let c)?:
            if let underlying = c.underlyingError as? LazyPullError { return underlying.message }
            guard !c.codingPath.isEmpty else { return "not valid JSON" }
            return "bad value at \(c.codingPath.map(\.stringValue).joined(separator: ".")): \(c.debugDescription)"
        default: return "\(error)"
        }
    }
}

extension ImageConfig {
    public static func decode(_ data: [UInt8], what: String) throws -> ImageConfig {
        do {
            return try JSONDecoder().decode(ImageConfig.self, from: Data(data))
        } catch {
            throw LazyPullError(.invalidManifest, "invalid image config \(what): \(ManifestDocument.reason(error))")
        }
    }
}

/// Chain IDs (OCI image spec config.md "Layer ChainID"): the identity of a stack of layers.
public enum ChainID {
    public static func chain(_ diffIDs: [Digest]) -> [Digest] {
        var result: [Digest] = []
        for diffID in diffIDs {
            if let previous = result.last {
                result.append(Digest.sha256(of: Array("\(previous) \(diffID)".utf8)))
            } else {
                result.append(diffID)
            }
        }
        return result
    }
}
