import Foundation
import LazyPullFS
import Testing

/// The ELF reader on headers whose offsets and sizes are chosen to overflow (issue 13: an
/// entrypoint with `e_phoff` near Int64.max took the layer host down): nothing, never a trap.
@Suite("ELF dependencies of hostile files")
struct ELFHostileTests {
    /// A 64-bit little-endian ELF file: program headers at `phoff` (written at 64 when it
    /// fits), each (type, offset, vaddr, size); a dynamic section of (tag, value) at 1024.
    static func elf(phoff: UInt64 = 64, headers: [(UInt32, UInt64, UInt64, UInt64)],
                    dynamic: [(UInt64, UInt64)] = [], size: Int = 4096, strings: Int = 2048) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: size)
        func put<T: FixedWidthInteger>(_ v: T, at: Int) {
            withUnsafeBytes(of: v.littleEndian) { for (i, byte) in $0.enumerated() { b[at + i] = byte } }
        }
        b[0...5] = [0x7F, 0x45, 0x4C, 0x46, 2, 1]
        put(phoff, at: 0x20)
        put(UInt16(56), at: 0x36)
        put(UInt16(headers.count), at: 0x38)
        for (i, h) in headers.enumerated() {
            let at = 64 + i * 56
            put(h.0, at: at)
            put(h.1, at: at + 8)
            put(h.2, at: at + 16)
            put(h.3, at: at + 32)
        }
        for (i, d) in dynamic.enumerated() {
            put(d.0, at: 1024 + 16 * i)
            put(d.1, at: 1024 + 16 * i + 8)
        }
        b[strings..<(strings + 10)] = ArraySlice(Array("libc.so.6\0".utf8))
        return b
    }

    static let max = UInt64(Int64.max)

    /// Each file and the libraries it yields (nil: it is not read at all).
    static let hostile: [String: (bytes: [UInt8], needed: [String]?)] = [
        "e_phoff near Int64.max": (elf(phoff: max - 10, headers: [(2, 1024, 0, 64)]), nil),
        "e_phoff = Int64.max": (elf(phoff: max, headers: [(2, 1024, 0, 64)]), nil),
        "e_phoff past the file": (elf(phoff: 4000, headers: [(2, 1024, 0, 64)]), nil),
        "PT_DYNAMIC offset near Int64.max": (elf(headers: [(2, max - 8, 0, 64)]), nil),
        // The dynamic section is read as far as the file goes.
        "PT_DYNAMIC size Int64.max": (elf(headers: [(1, 0, 0, 4096), (2, 1024, 0, max)], dynamic: [(5, 2048)]), []),
        "PT_INTERP offset near Int64.max": (elf(headers: [(3, max - 1, 0, 10), (2, 1024, 0, 64)]), nil),
        "PT_LOAD offset near Int64.max": (elf(headers: [(1, max - 5, 0, 0x2000), (2, 1024, 0, 64)], dynamic: [(5, 0x1000), (1, 0)]), nil),
        "PT_LOAD vaddr + size past Int64.max": (elf(headers: [(1, max - 2, max - 10, max), (2, 1024, 0, 64)], dynamic: [(5, max - 5), (1, 0)]), nil),
    ]

    @Test("overflowing offsets and sizes yield nothing, or what lies inside the file", arguments: hostile.keys.sorted())
    func yieldsNothing(_ label: String) throws {
        let file = try #require(Self.hostile[label])
        let parsed = file.bytes.withUnsafeBytes { ELFDependencies.parse($0) }
        #expect(parsed?.needed == file.needed)
    }

    @Test("a needed name at an offset near Int64.max is skipped, the rest is read")
    func neededOffsetOverflow() throws {
        let bytes = Self.elf(headers: [(1, 0, 0, 4096), (2, 1024, 0, 64)], dynamic: [(5, 2048), (1, Self.max - 3), (1, 0)])
        let parsed = try #require(bytes.withUnsafeBytes { ELFDependencies.parse($0) })
        #expect(parsed.needed == ["libc.so.6"])
    }

    @Test("at most 256 needed names are read from one file")
    func neededBounded() throws {
        let dynamic = [(UInt64(5), UInt64(0))] + Array(repeating: (UInt64(1), UInt64(8000)), count: 1000)
        let bytes = Self.elf(headers: [(1, 0, 0, 32768), (2, 1024, 0, 16 * 1001)], dynamic: dynamic,
                             size: 32768, strings: 8000)
        let parsed = try #require(bytes.withUnsafeBytes { ELFDependencies.parse($0) })
        #expect(parsed.needed.count == 256)
        #expect(Set(parsed.needed) == ["libc.so.6"])
    }
}
