import Foundation
import LazyPullLayers
import LazyPullOCI
import LazyPullRegistry

/// `lazypull convert --estargz`: pulls an image, rewrites every layer as eStargz (prefetch
/// list first, then the landmark), rewrites the config's `diff_ids`, and pushes the result
/// with the TOC digest annotations a lazy reader roots its trust in.
public struct ImageConverter: Sendable {
    public init() {}

    public func convertToEStargz(from source: Reference, to destination: Reference, prefetch: [String],
                                 options: PullOptions, scratch: String) throws -> Digest {
        let src = RegistryClient(reference: source, options: options.registry)
        let dst = RegistryClient(reference: destination, options: options.registry)
        let image = try src.resolve(platform: options.platform)
        let configBytes = try src.fetchBlob(image.manifestValue.config)
        guard var config = try JSONSerialization.jsonObject(with: Data(configBytes)) as? [String: Any],
              var rootfs = config["rootfs"] as? [String: Any] else {
            throw LazyPullError(.invalidManifest, "image config of \(source) is not a JSON object with rootfs")
        }
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        var layers: [Descriptor] = []
        var diffIDs: [String] = []
        for layer in image.manifestValue.layers {
            let converted = try convertLayer(layer, from: src, prefetch: prefetch, scratch: scratch)
            try dst.uploadBlob(converted.bytes, digest: converted.output.digest)
            layers.append(Descriptor(mediaType: MediaType.ociLayerGzip, digest: converted.output.digest, size: converted.output.size,
                                     annotations: [LayerTOCReader.tocDigestAnnotation: converted.output.tocDigest.description,
                                                   "io.containers.estargz.uncompressed-size": String(converted.output.uncompressedSize)]))
            diffIDs.append(converted.output.diffID.description)
        }
        rootfs["diff_ids"] = diffIDs
        config["rootfs"] = rootfs
        let newConfig = Array(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]))
        let configDigest = Digest.sha256(of: newConfig)
        try dst.uploadBlob(newConfig, digest: configDigest)
        let manifest = Manifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(newConfig.count)),
                                layers: layers)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let manifestBytes = Array(try encoder.encode(manifest))
        try dst.putManifest(manifestBytes, mediaType: MediaType.ociManifest, tag: destination.tag ?? destination.manifestReference)
        return Digest.sha256(of: manifestBytes)
    }

    private func convertLayer(_ layer: Descriptor, from src: RegistryClient, prefetch: [String],
                              scratch: String) throws -> (output: EStargzWriter.Output, bytes: [UInt8]) {
        let original = "\(scratch)/\(layer.digest.encoded).orig"
        let converted = "\(scratch)/\(layer.digest.encoded).esgz"
        defer { unlink(original); unlink(converted) }
        guard FileManager.default.createFile(atPath: original, contents: nil), let out = FileHandle(forWritingAtPath: original) else {
            throw LazyPullError(.io, "cannot write \(original)")
        }
        let hasher = SHA256Hasher()
        try src.streamBlob(layer.digest, from: 0) { chunk in
            hasher.update(chunk)
            out.write(Data(chunk))
        }
        try out.close()
        try layer.digest.verify(hasher.finalize(), what: "layer of \(src.reference)")
        let input = open(original, O_RDONLY | O_CLOEXEC)
        let output = open(converted, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer { close(input); close(output) }
        guard input >= 0, output >= 0 else { throw LazyPullError(.io, "cannot open scratch files in \(scratch)") }
        let tar = try Decompression.source(FileDescriptorSource(fd: input), compression: try LayerCompression(mediaType: layer.mediaType))
        let result = try EStargzWriter.convert(tar, prefetch: prefetch, to: output)
        guard let bytes = FileManager.default.contents(atPath: converted) else { throw LazyPullError(.io, "cannot read \(converted)") }
        return (result, Array(bytes))
    }
}
