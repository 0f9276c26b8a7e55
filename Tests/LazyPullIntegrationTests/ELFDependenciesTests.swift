import Foundation
import LazyPullFS
import Testing

/// The ELF reader behind dependency prefetch, on this machine's own binaries (real loaders'
/// input) and on what must yield nothing.
@Suite("ELF dependencies")
struct ELFDependenciesTests {
    func parse(_ path: String) throws -> ELFDependencies? {
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        return bytes.withUnsafeBytes { ELFDependencies.parse($0) }
    }

    @Test("a dynamically linked program names its loader and libc; the candidates start with the loader")
    func dynamicProgram() throws {
        let ls = try #require(try parse("/usr/bin/ls"))
        #expect(ls.interpreter == "/lib64/ld-linux-x86-64.so.2")
        #expect(ls.needed.contains("libc.so.6"))
        #expect(ls.candidatePaths.first == "/lib64/ld-linux-x86-64.so.2")
        #expect(ls.candidatePaths.contains("/usr/lib/x86_64-linux-gnu/libc.so.6"))
    }

    @Test("a shared library has no loader of its own but names what it needs")
    func sharedLibrary() throws {
        let libm = try #require(try parse("/usr/lib/x86_64-linux-gnu/libm.so.6"))
        #expect(libm.needed.contains("libc.so.6"))
    }

    @Test("static programs, scripts, truncated and garbage input yield nothing",
          arguments: ["static", "script", "truncated", "garbage"])
    func nothing(_ kind: String) throws {
        let bytes: [UInt8]
        switch kind {
        case "static": bytes = try Array(Data(contentsOf: URL(fileURLWithPath: "/bin/busybox")))
        case "script": bytes = Array("#!/bin/sh\necho hi\n".utf8)
        case "truncated": bytes = Array(try Data(contentsOf: URL(fileURLWithPath: "/usr/bin/ls")).prefix(200))
        default: bytes = [0x7F, 0x45, 0x4C, 0x46, 2, 1] + [UInt8](repeating: 0xFF, count: 4096)
        }
        #expect(bytes.withUnsafeBytes { ELFDependencies.parse($0) } == nil)
    }
}
