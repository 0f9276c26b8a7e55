/// Media types of the OCI image spec (media-types.md) and Docker's image manifest v2 schema 2.
public enum MediaType {
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let ociLayerNondistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    public static let dockerForeignLayerGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    public static let dockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
    public static let dockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"

    /// The Accept header for manifest requests: without it old registries answer schema 1.
    public static let manifestAccept = [ociIndex, ociManifest, dockerManifestList, dockerManifest].joined(separator: ", ")

    public static func isIndex(_ type: String) -> Bool { type == ociIndex || type == dockerManifestList }
    public static func isManifest(_ type: String) -> Bool { type == ociManifest || type == dockerManifest }
    public static func isSchema1(_ type: String) -> Bool {
        type == dockerSchema1 || type == dockerSchema1Signed || type == "application/json"
    }
}

/// How a layer blob is compressed, derived from its media type.
public enum LayerCompression: String, Sendable, Codable {
    case none, gzip, zstd

    public init(mediaType: String) throws {
        switch mediaType {
        case MediaType.ociLayer, "application/vnd.oci.image.layer.nondistributable.v1.tar":
            self = .none
        case MediaType.ociLayerGzip, MediaType.dockerLayerGzip, MediaType.ociLayerNondistributableGzip,
             MediaType.dockerForeignLayerGzip:
            self = .gzip
        case MediaType.ociLayerZstd, "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
            self = .zstd
        default:
            throw LazyPullError(.unsupportedMediaType, "unsupported layer media type \"\(mediaType)\"")
        }
    }
}
