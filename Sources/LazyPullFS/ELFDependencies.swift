import Foundation

/// What a dynamically linked ELF executable or library will make the dynamic loader open next:
/// its interpreter (`PT_INTERP`) and the libraries it needs (`DT_NEEDED`), with the paths the
/// loader searches for them (`DT_RUNPATH`/`DT_RPATH` first, then the usual system directories).
/// A lazy layer prefetches these as soon as such a file has been fetched, so the loader's
/// chain of opens does not pay one round trip per library.
///
/// Only 64-bit little-endian ELF (x86-64, AArch64) is read (System V gABI, "Program Header"
/// and "Dynamic Section"); anything else, or anything malformed, yields nothing.
public struct ELFDependencies: Equatable, Sendable {
    public var interpreter: String?
    public var needed: [String]
    public var searchPaths: [String]

    /// Where glibc's loader looks when no run path names the library (`ld.so(8)`, Debian
    /// multiarch directories first).
    static let systemPaths = [
        "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib/aarch64-linux-gnu",
        "/usr/lib64", "/lib64", "/usr/lib", "/lib",
    ]

    /// At most this many `DT_NEEDED` names and run path directories are read from one file
    /// (a program needs a few dozen libraries at most): what one file makes the layer host
    /// look up and prefetch stays bounded.
    static let maxNeeded = 256
    static let maxRunPaths = 32

    /// Candidate absolute paths, interpreter first.
    public var candidatePaths: [String] {
        var paths = interpreter.map { [$0] } ?? []
        for name in needed {
            if name.contains("/") { paths.append(name); continue }
            paths += searchPaths.map { "\($0)/\(name)" }
        }
        return paths
    }

    /// Parses the file's bytes; nil unless it is a dynamically linked 64-bit little-endian ELF.
    /// Every offset and size comes from the file: all arithmetic on them is checked and every
    /// read is bounded by `bytes.count`, so no input makes it trap or read outside `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> ELFDependencies? {
        /// `a + b`, nil when it overflows.
        func sum(_ a: Int, _ b: Int) -> Int? {
            let (s, overflow) = a.addingReportingOverflow(b)
            return overflow ? nil : s
        }
        /// Whether `length` bytes at `at` are inside the file.
        func inside(_ at: Int, _ length: Int) -> Bool {
            at >= 0 && at <= bytes.count && length <= bytes.count - at
        }
        func u16(_ at: Int) -> Int? { inside(at, 2) ? Int(bytes.loadUnaligned(fromByteOffset: at, as: UInt16.self).littleEndian) : nil }
        func u32(_ at: Int) -> Int? { inside(at, 4) ? Int(bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian) : nil }
        func u64(_ at: Int) -> Int? {
            guard inside(at, 8) else { return nil }
            let v = bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self).littleEndian
            return v <= UInt64(Int.max) ? Int(v) : nil
        }
        func string(_ at: Int) -> String? {
            guard at >= 0, at < bytes.count else { return nil }
            var end = at
            while end < bytes.count, end - at < 4096, bytes[end] != 0 { end += 1 }
            guard end < bytes.count, end > at, bytes[end] == 0 else { return nil }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[at..<end]), as: UTF8.self)
        }
        guard bytes.count >= 64, bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46,
              bytes[4] == 2, bytes[5] == 1,
              let phoff = u64(0x20), let phentsize = u16(0x36), let phnum = u16(0x38), phentsize >= 56, phnum <= 256,
              inside(phoff, phnum * phentsize) else {   // phnum * phentsize < 2^24
            return nil
        }
        struct Load { var vaddr: Int, offset: Int, size: Int }
        var loads: [Load] = []
        var interpreter: String?
        var dynamic: (offset: Int, size: Int)?
        for i in 0..<phnum {
            let at = phoff + i * phentsize     // inside the file: checked above
            guard let type = u32(at), let offset = u64(at + 8), let vaddr = u64(at + 16), let size = u64(at + 32) else { return nil }
            switch type {
            case 1: loads.append(Load(vaddr: vaddr, offset: offset, size: size))
            case 2: dynamic = (offset, size)
            case 3: interpreter = string(offset)
            default: break
            }
        }
        guard let dynamic, dynamic.offset <= bytes.count else { return nil }
        // The dynamic section as far as it is in the file.
        let dynamicEnd = dynamic.offset + min(dynamic.size, bytes.count - dynamic.offset)
        var neededOffsets: [Int] = []
        var pathOffsets: [Int] = []
        var stringTable: Int?
        var at = dynamic.offset
        while dynamicEnd - at >= 16, let tag = u64(at), let value = u64(at + 8), tag != 0 {
            switch tag {
            case 1 where neededOffsets.count < maxNeeded: neededOffsets.append(value)    // DT_NEEDED
            case 5: stringTable = value                                                 // DT_STRTAB (an address)
            case 15 where pathOffsets.count < maxRunPaths, 29 where pathOffsets.count < maxRunPaths:
                pathOffsets.append(value)                                               // DT_RPATH, DT_RUNPATH
            default: break
            }
            at += 16
        }
        guard let stringTable,
              let segment = loads.first(where: { stringTable >= $0.vaddr && stringTable - $0.vaddr < $0.size }),
              let table = sum(stringTable - segment.vaddr, segment.offset) else { return nil }
        let needed = neededOffsets.compactMap { sum(table, $0).flatMap(string) }
        let runPaths = pathOffsets.compactMap { sum(table, $0).flatMap(string) }
            .flatMap { $0.split(separator: ":").map(String.init) }
            .filter { $0.hasPrefix("/") }   // $ORIGIN and relative entries are left to the loader
            .prefix(maxRunPaths)
        return ELFDependencies(interpreter: interpreter, needed: needed, searchPaths: runPaths + systemPaths)
    }
}
