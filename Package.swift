// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "lazypull",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lazypull", targets: ["lazypull"]),
        .executable(name: "lazypull-fuse-host", targets: ["lazypull-fuse-host"]),
        .executable(name: "lazypull-serve", targets: ["lazypull-serve"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // System libraries: umbrella headers only.
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CIsal", pkgConfig: "libisal", providers: [.apt(["libisal-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // C for every macro or variadic entry point Swift cannot call.
        .target(name: "CLazyPullShims", dependencies: ["CCurl", "CZlib", "CFuse3"]),

        .target(name: "LazyPullOCI", dependencies: ["CCrypto"]),
        .target(name: "LazyPullRegistry", dependencies: ["LazyPullOCI", "CCurl", "CLazyPullShims"]),
        .target(name: "LazyPullContent", dependencies: ["LazyPullOCI", "CSQLite", "CLazyPullShims"]),
        .target(name: "LazyPullLayers", dependencies: ["LazyPullOCI", "CZlib", "CZstd", "CIsal", "CLazyPullShims"]),
        .target(name: "LazyPullFUSE", dependencies: ["CFuse3", "CLazyPullShims", "LazyPullOCI"]),
        .target(name: "LazyPullFS", dependencies: ["LazyPullFUSE", "LazyPullLayers", "LazyPullOCI", "CLazyPullShims"]),
        .target(name: "LazyPullSnapshots", dependencies: ["LazyPullOCI", "LazyPullContent", "CLazyPullShims"]),
        .target(name: "LazyPullImages", dependencies: [
            "CLazyPullShims", "LazyPullOCI", "LazyPullFS", "LazyPullRegistry", "LazyPullContent", "LazyPullLayers", "LazyPullSnapshots",
        ]),
        .target(name: "LazyPullService", dependencies: [
            "CLazyPullShims", "LazyPullOCI", "LazyPullFUSE", "LazyPullFS", "LazyPullRegistry", "LazyPullContent", "LazyPullLayers", "LazyPullImages",
        ]),
        // containerd's snapshot service over gRPC; Generated/ comes from Protos/ (`make generate`).
        .target(name: "LazyPullContainerd", dependencies: [
            "LazyPullService", "LazyPullImages", "LazyPullOCI", "LazyPullContent",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], exclude: ["Protos"]),
        .target(name: "LazyPullCommands", dependencies: [
            "LazyPullService",
            "LazyPullOCI", "LazyPullRegistry", "LazyPullContent", "LazyPullLayers", "LazyPullSnapshots",
            "LazyPullImages",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "TOMLKit", package: "TOMLKit"),
        ]),
        // Every parser of untrusted input as a function of bytes: the fuzz executables' and
        // the corpus regression tests' one entry point.
        .target(name: "LazyPullFuzz", dependencies: ["LazyPullOCI", "LazyPullRegistry", "LazyPullLayers", "LazyPullFS"]),
        .executableTarget(name: "lazypull", dependencies: ["LazyPullCommands"]),
        .executableTarget(name: "lazypull-fuse-host", dependencies: ["LazyPullService"]),
        .executableTarget(name: "lazypull-serve", dependencies: [
            "LazyPullCommands", "LazyPullContainerd", "LazyPullService", "LazyPullImages", "LazyPullOCI",
        ]),

        .testTarget(name: "LazyPullOCITests", dependencies: ["LazyPullOCI"]),
        .testTarget(name: "LazyPullRegistryTests", dependencies: ["LazyPullRegistry", "LazyPullOCI"]),
        .testTarget(name: "LazyPullLayersTests", dependencies: ["LazyPullLayers", "LazyPullOCI", "CZlib"]),
        .testTarget(name: "LazyPullCommandsTests", dependencies: ["LazyPullCommands", "LazyPullOCI"]),
        .testTarget(name: "LazyPullServiceTests", dependencies: ["LazyPullService", "LazyPullOCI"]),
        .testTarget(name: "LazyPullFuzzTests", dependencies: ["LazyPullFuzz"]),
        .testTarget(name: "LazyPullIntegrationTests", dependencies: ["LazyPullOCI", "LazyPullRegistry", "LazyPullLayers", "LazyPullFUSE", "LazyPullFS", "CLazyPullShims"]),
    ],
    swiftLanguageModes: [.v6]
)

// libFuzzer executables, one per parser (`make fuzz` builds them with LAZYPULL_FUZZ=1 and
// `-sanitize=fuzzer,address`): not part of an ordinary build, whose programs link only what
// they run.
if Context.environment["LAZYPULL_FUZZ"] == "1" {
    for name in ["reference", "www-authenticate", "manifest", "content-range", "estargz", "zstd-chunked",
                 "toc-validator", "tar", "elf"] {
        package.products.append(.executable(name: "fuzz-\(name)", targets: ["fuzz-\(name)"]))
        package.targets.append(.executableTarget(name: "fuzz-\(name)", dependencies: ["LazyPullFuzz"],
                                                 path: "Sources/Fuzz/\(name)"))
    }
}
