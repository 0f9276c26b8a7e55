import Foundation
import LazyPullLayers
import LazyPullOCI
import LazyPullRegistry
import Testing

/// Tables of contents of layers converted by the reference producer, Debian's ctr-remote.
@Suite("Lazy layer tables of contents", .serialized)
struct LayerTOCTests {
    /// Decompresses one chunk (`offset ..< end` of the blob) in `format`.
    func decompress(_ bytes: [UInt8], format: LazyLayerFormat) throws -> [UInt8] {
        let source: ByteSource = format == .estargz ? IsalGzipSource(MemorySource(bytes)) : try ZstdSource(MemorySource(bytes))
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try source.read(into: $0) }
            if n == 0 { return out }
            out += buffer[..<n]
        }
    }

    @Test("eStargz and zstd:chunked TOCs are found, verified, and their chunk offsets hold",
          arguments: [("estargz", LazyLayerFormat.estargz), ("zstdchunked", LazyLayerFormat.zstdChunked)])
    func readsConvertedLayers(converter: String, format: LazyLayerFormat) throws {
        let tmp = try TemporaryDirectory("toc")
        let registry = try TestRegistry(in: tmp.path)
        // 6 MiB of data.bin: more than one 4 MiB chunk.
        try run(["make-small-image.sh", registry.host, "small:v1", "6"])
        let containerd = try TestContainerd(in: tmp.path)
        let converted = "\(registry.host)/small:\(converter)"
        try run(["convert-image.sh", containerd.socket, "\(registry.host)/small:v1", converted, converter])

        let client = RegistryClient(reference: try Reference(parsing: converted))
        let image = try client.resolve(platform: .host)
        var sawHello = false
        var chunkEntries = 0
        for layer in image.manifestValue.layers {
            #expect(LayerTOCReader.format(of: layer) == format)
            let (toc, _) = try LayerTOCReader.read(layer) { try client.fetchRange(layer.digest, offset: $0, length: $1) }
            #expect(toc.version == 1)
            // Every regular file's chunks decompress to bytes with the chunk digest the TOC names.
            let offsets = toc.entries.compactMap(\.offset).sorted()
            var fileSize: Int64 = 0
            for entry in toc.entries where entry.type == "reg" || entry.type == "chunk" {
                if entry.type == "reg" { fileSize = entry.size ?? 0 }
                guard let start = entry.offset, let digest = entry.chunkDigest else { continue }
                if entry.type == "chunk" { chunkEntries += 1 }
                let end = entry.endOffset ?? offsets.first { $0 > start } ?? layer.size
                let data = try decompress(try client.fetchRange(layer.digest, offset: start, length: end - start), format: format)
                let expected = try Digest(parsing: digest)
                // A chunk without chunkSize runs to the end of its file.
                let chunkLength = Int(entry.chunkSize.flatMap { $0 > 0 ? $0 : nil } ?? (fileSize - (entry.chunkOffset ?? 0)))
                let inner = Int(entry.innerOffset ?? 0)
                try #require(inner + chunkLength <= data.count)
                let chunk = Array(data[inner..<(inner + chunkLength)])
                #expect(Digest.sha256(of: chunk) == expected, "chunk of \(entry.name) at \(start)")
                if entry.name == "hello.txt" {
                    sawHello = true
                    #expect(String(decoding: chunk, as: UTF8.self) == "hello from lazypull\n")
                }
            }
        }
        #expect(sawHello)
        #expect(chunkEntries > 0, "no file was split into chunks")

        // A TOC digest that does not match is refused: trust is rooted in the annotation.
        var forged = image.manifestValue.layers[0]
        let key = format == .estargz ? LayerTOCReader.tocDigestAnnotation : "io.containers.zstd-chunked.manifest-checksum"
        forged.annotations?[key] = "sha256:" + String(repeating: "0", count: 64)
        #expect {
            _ = try LayerTOCReader.read(forged) { try client.fetchRange(forged.digest, offset: $0, length: $1) }
        } throws: { ($0 as? LazyPullError)?.code == .digestMismatch }
    }

    @Test("a blob's tail by suffix range: the same bytes and size as a range of the known size, also from a server that ignores Range")
    func tailBySuffixRange() throws {
        let tmp = try TemporaryDirectory("tail")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-small-image.sh", registry.host, "small:v1", "1"])
        let port = freePort()
        let front = try faultProxy(port: port, upstream: registry.host, log: tmp.path + "/proxy.log", in: tmp.path, ["--ignore-range"])
        defer { front.stop() }
        for host in [registry.host, "127.0.0.1:\(port)"] {
            let client = RegistryClient(reference: try Reference(parsing: "\(host)/small:v1"))
            let layers = try client.resolve(platform: .host).manifestValue.layers
            for layer in layers {
                for length: Int64 in [1, 51, layer.size, layer.size + 4096] {
                    let (bytes, size) = try client.fetchTail(layer.digest, length: length)
                    let kept = min(length, layer.size)
                    #expect(size == layer.size, "\(host): size of \(layer.digest)")
                    #expect(bytes == (try client.fetchRange(layer.digest, offset: layer.size - kept, length: kept)),
                            "\(host): last \(length) bytes of \(layer.digest)")
                }
            }
        }
    }

    @Test("plain gzip layers are not lazy")
    func plainLayersAreNotLazy() throws {
        let d = Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.sha256(of: [1]), size: 100)
        #expect(LayerTOCReader.format(of: d) == nil)
        #expect(throws: LazyPullError.self) { _ = try LayerTOCReader.read(d) { _, _ in [] } }
    }
}
