import Foundation
import LazyPullFS
import LazyPullLayers
import LazyPullOCI
import LazyPullRegistry

/// One parser of untrusted input, driven with arbitrary bytes: by libFuzzer (`make fuzz`,
/// one executable per target under `Sources/Fuzz/`) and by the unit tests, which feed every
/// file of `Tests/Fuzz/<name>/` (the seed corpus and every crash ever found) through it.
///
/// A target must return for every input. A thrown error is an answer (the input was
/// refused); a trap, a hang or unbounded memory is a bug.
public struct FuzzTarget: Sendable {
    public let name: String
    public let body: @Sendable ([UInt8]) -> Void

    public init(_ name: String, _ body: @escaping @Sendable ([UInt8]) -> Void) {
        self.name = name
        self.body = body
    }

    public func run(_ input: [UInt8]) { body(input) }

    /// Every target, by the name its executable, corpus directory and `make fuzz` use.
    public static let all: [FuzzTarget] = [reference, wwwAuthenticate, manifest, contentRange, estargz, zstdChunked,
                                           tocValidator, tar, elf]

    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }

    /// Input as text, the way a header or an annotation reaches lazypull.
    static func text(_ input: [UInt8]) -> String { String(decoding: input, as: UTF8.self) }

    /// Image references as users and containerd's labels give them (`Reference(parsing:)`).
    public static let reference = FuzzTarget("reference") { input in
        guard let ref = try? Reference(parsing: text(input)) else { return }
        _ = ref.description
        _ = ref.isLoopback
        _ = try? Reference(parsing: ref.description)
    }

    /// `WWW-Authenticate` challenges (RFC 7235 §4.1, the registry token flow).
    public static let wwwAuthenticate = FuzzTarget("www-authenticate") { input in
        for challenge in AuthChallenge.parse(text(input)) {
            _ = challenge.realm
            _ = challenge.scope
        }
    }

    /// Manifests, indexes and configs as a registry sends them. The first byte picks the
    /// Content-Type header the registry claimed.
    public static let manifest = FuzzTarget("manifest") { input in
        let types = [nil, MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest,
                     "application/vnd.docker.distribution.manifest.v1+prettyjws", "application/json"]
        let type = types[Int(input.first ?? 0) % types.count]
        let body = Array(input.dropFirst())
        if case .manifest(let m)? = try? ManifestDocument.decode(body, contentType: type, what: "fuzz") {
            _ = m.layersSize
            for layer in m.layers { _ = LayerTOCReader.format(of: layer) }
        }
        if let config = try? ImageConfig.decode(body, what: "fuzz") {
            _ = config.defaultProgramPaths
            _ = ChainID.chain(config.rootfs.diffIDs)
        }
    }

    /// `Content-Range` of a 206 answer (RFC 9110 §14.4).
    public static let contentRange = FuzzTarget("content-range") { input in
        if let range = ContentRange(parsing: text(input)) { _ = range.length }
    }

    /// A TOC's JSON (the eStargz and zstd:chunked schema) through the parser and the
    /// validator: the layer host builds its tree only from what passes. The first 8 bytes are
    /// the end of the blob's file data (the TOC's offset), big-endian.
    public static let tocValidator = FuzzTarget("toc-validator") { input in
        var dataEnd: Int64 = 0
        for byte in input.prefix(8) { dataEnd = dataEnd << 8 | Int64(byte) }
        let layer = Digest.sha256(of: [])
        guard let toc = try? LayerTOCReader.decode(Array(input.dropFirst(8)), layer: layer) else { return }
        _ = try? TOCValidator.validate(toc, layer: layer, dataEnd: dataEnd)
    }

    /// An eStargz blob's footer, tail and TOC tar (estargz.md "Footer", "TOC"), the input
    /// being the whole blob. The TOC digest annotation cannot match (it would have to be the
    /// digest of what the input decompresses to), so this target covers everything up to the
    /// digest check; `toc-validator` covers the TOC's JSON from there on.
    public static let estargz = FuzzTarget("estargz") { input in
        let layer = Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.sha256(of: input),
                               size: Int64(input.count),
                               annotations: [LayerTOCReader.tocDigestAnnotation: Digest.sha256(of: []).description])
        locate(layer, blob: input)
    }

    /// A zstd:chunked blob with its manifest position; the input's first line is the
    /// position annotation (`offset:length:uncompressed:type`), the rest the blob.
    public static let zstdChunked = FuzzTarget("zstd-chunked") { input in
        let newline = input.firstIndex(of: 0x0A) ?? input.endIndex
        let position = text(Array(input[..<newline]))
        let blob = newline < input.endIndex ? Array(input[(newline + 1)...]) : []
        let layer = Descriptor(mediaType: MediaType.ociLayerZstd, digest: Digest.sha256(of: blob), size: Int64(blob.count),
                               annotations: ["io.github.containers.zstd-chunked.manifest-position": position,
                                             "io.github.containers.zstd-chunked.manifest-checksum":
                                                Digest.sha256(of: blob).description])
        locate(layer, blob: blob)
    }

    /// Reads `layer`'s TOC from `blob` with Range semantics: out-of-range asks are errors.
    static func locate(_ layer: Descriptor, blob: [UInt8]) {
        _ = try? LayerTOCReader.locate(layer) { offset, length in
            guard offset >= 0, length >= 0, offset <= Int64(blob.count), length <= Int64(blob.count) - offset else {
                throw LazyPullError(.registry, "range out of the blob")
            }
            return Array(blob[Int(offset)..<Int(offset + length)])
        }
    }

    /// A layer's tar stream (POSIX pax, ustar, GNU), every entry and its content read; each
    /// name goes through the unpacker's name rules.
    public static let tar = FuzzTarget("tar") { input in
        let reader = TarReader(MemorySource(input))
        var buffer = [UInt8](repeating: 0, count: 4096)
        var entries = 0
        while entries < 10_000, let entry = try? reader.next() {
            entries += 1
            _ = try? LayerUnpacker.components(of: entry.name, entry: entry.name)
            _ = try? LayerUnpacker.components(of: entry.linkName, entry: entry.name)
            while let n = try? buffer.withUnsafeMutableBytes({ try reader.readContent(into: $0) }), n > 0 {}
        }
    }

    /// An executable's program headers and dynamic section (ELF-64, the System V gABI), as
    /// the dependency prefetch reads them from a file's first bytes.
    public static let elf = FuzzTarget("elf") { input in
        input.withUnsafeBytes { bytes in
            if let dependencies = ELFDependencies.parse(bytes) { _ = dependencies.candidatePaths }
        }
    }
}

/// `argv` as libFuzzer's `LLVMFuzzerRunDriver(int *argc, char ***argv, callback)` takes it.
public typealias FuzzArguments = UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
/// libFuzzer's per-input callback: `int (*)(const uint8_t *data, size_t size)`.
public typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32

/// The target the running fuzz executable drives (one per process, set before libFuzzer starts).
nonisolated(unsafe) private var current: FuzzTarget?

/// What every `Sources/Fuzz/<name>/main.swift` runs: libFuzzer's driver (linked in by
/// `-sanitize=fuzzer`, passed in as `driver` because only those executables link it) on the
/// target `name`, with the process's arguments (libFuzzer's flags, corpus directories).
public func runFuzzer(_ name: String,
                      _ driver: (UnsafeMutablePointer<Int32>, FuzzArguments, FuzzCallback) -> Int32) -> Never {
    guard let target = FuzzTarget.named(name) else { fatalError("no fuzz target \(name)") }
    current = target
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(driver(&argc, &argv) { data, size in
        current?.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
        return 0
    })
}

/// libFuzzer's per-input entry point, for when its own `main` drives the process; the target
/// is the one ``runFuzzer(_:_:)`` chose. In an ordinary build nothing calls it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    current?.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}
