import Foundation
import LazyPullContent
import LazyPullOCI
import LazyPullRegistry

/// An image resolved for one platform, with its index, manifest and config verified and in
/// the content store: the first step of every pull and mount, eager or lazy.
struct StoredImage {
    let reference: Reference
    let resolved: RegistryClient.ResolvedImage
    let config: ImageConfig
    var manifest: Manifest { resolved.manifestValue }

    static func fetch(_ reference: Reference, registry: RegistryClient, platform: Platform,
                      into content: ContentStore) throws -> StoredImage {
        try fetch(reference, registry: registry, platform: platform, into: content, whileConfigComes: { _ in })
    }

    /// The same, calling `resolved` with the manifest before the config is fetched: work that
    /// needs only the manifest (a lazy layer's TOC) overlaps the config's round trip.
    static func fetch(_ reference: Reference, registry: RegistryClient, platform: Platform, into content: ContentStore,
                      whileConfigComes manifestKnown: (Manifest) -> Void) throws -> StoredImage {
        let resolved = try registry.resolve(platform: platform)
        let manifest = resolved.manifestValue
        if let index = resolved.index { try content.write(index.bytes, as: index.descriptor.digest) }
        try content.write(resolved.manifest.bytes, as: resolved.manifest.descriptor.digest)
        manifestKnown(manifest)
        let configBytes = content.contains(manifest.config.digest)
            ? try content.read(manifest.config.digest)
            : try registry.fetchBlob(manifest.config)
        try content.write(configBytes, as: manifest.config.digest)
        let config = try ImageConfig.decode(configBytes, what: "\(manifest.config.digest) of \(reference)")
        // A single manifest names its platform only in its config (image-spec config.md):
        // check it, as containerd does, so `--platform` never silently mounts another one.
        if resolved.index == nil, let os = config.os, let architecture = config.architecture {
            let offered = Platform(os: os, architecture: architecture, variant: config.variant)
            guard PlatformMatcher(platform).rank(offered) != nil else {
                throw LazyPullError(.platformNotFound,
                                    "\(reference) has no image for platform \(platform) (available: \(offered))")
            }
        }
        guard config.rootfs.diffIDs.count == manifest.layers.count else {
            throw LazyPullError(.invalidManifest,
                                "\(reference): manifest lists \(manifest.layers.count) layers but the config has \(config.rootfs.diffIDs.count) diff_ids")
        }
        return StoredImage(reference: reference, resolved: resolved, config: config)
    }

    var chainIDs: [Digest] { ChainID.chain(config.rootfs.diffIDs) }

    /// The image record. Layer blobs are among the content it keeps alive only when they were
    /// stored (eager pulls); a lazy mount reads them from the registry.
    func record(platform: Platform, keepingLayers: Bool) -> ImageRecord {
        let metadata = [resolved.index?.descriptor.digest, resolved.manifest.descriptor.digest, manifest.config.digest]
        return ImageRecord(
            name: reference.description, target: resolved.target, manifest: resolved.manifest.descriptor.digest,
            config: manifest.config.digest, chainIDs: chainIDs,
            content: metadata.compactMap { $0 } + (keepingLayers ? manifest.layers.map(\.digest) : []),
            size: manifest.layersSize,
            platform: [config.os ?? platform.os, config.architecture ?? platform.architecture, config.variant]
                .compactMap { $0 }.joined(separator: "/"))
    }
}
