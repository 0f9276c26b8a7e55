import Foundation
import LazyPullOCI

/// Parses a table of contents (`stargz.index.json`, the zstd:chunked manifest) from its JSON
/// (RFC 8259) straight into ``LayerTOC``: the schema is fixed, so one pass over the bytes
/// with no intermediate tree is enough, several times faster than `JSONDecoder` (building a
/// large layer's tree is on the critical path of a lazy mount).
///
/// Accepts what `JSONDecoder` accepts for this schema: keys in any order, unknown keys (any
/// value, skipped), `null` for optional fields, string escapes including surrogate pairs.
/// Numbers must be integers. Input is untrusted: every access is bounds-checked and nesting
/// is limited.
struct TOCJSONParser {
    struct Failure: Error, CustomStringConvertible {
        let reason: String
        let offset: Int
        var description: String { "\(reason) at byte \(offset)" }
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var position = 0
    private static let maxDepth = 64

    private init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    static func parse(_ json: [UInt8]) throws -> LayerTOC {
        try json.withUnsafeBufferPointer { buffer in
            var parser = TOCJSONParser(buffer)
            let toc = try parser.document()
            parser.skipWhitespace()
            guard parser.position == buffer.count else { throw parser.failure("unexpected data after the document") }
            return toc
        }
    }

    // MARK: Schema

    private mutating func document() throws -> LayerTOC {
        var version: Int?
        var entries: [TOCEntry]?
        try object { parser, key in
            switch key {
            case "version": version = try parser.optionalInteger().map(Int.init)
            case "entries":
                guard try !parser.null() else { entries = nil; return }
                var list: [TOCEntry] = []
                try parser.array { parser in
                    // Bounded while parsing: a TOC of millions of tiny entries costs memory
                    // long before the validator would count them.
                    guard list.count < TOCValidator.maxEntries else {
                        throw parser.failure("more than \(TOCValidator.maxEntries) entries")
                    }
                    list.append(try parser.entry())
                }
                entries = list
            default: try parser.skipValue(depth: 1)
            }
        }
        guard let version else { throw failure("missing \"version\"") }
        guard let entries else { throw failure("missing \"entries\"") }
        return LayerTOC(version: version, entries: entries)
    }

    private mutating func entry() throws -> TOCEntry {
        let start = position
        var name: String?
        var type: String?
        var entry = TOCEntry(name: "", type: "")
        try object { parser, key in
            switch key {
            case "name": name = try parser.optionalString()
            case "type": type = try parser.optionalString()
            case "size": entry.size = try parser.optionalInteger()
            case "modtime": entry.modtime = try parser.optionalString()
            case "linkName": entry.linkName = try parser.optionalString()
            case "mode": entry.mode = try parser.optionalInteger()
            case "uid": entry.uid = try parser.optionalInteger().map(Int.init)
            case "gid": entry.gid = try parser.optionalInteger().map(Int.init)
            case "devMajor": entry.devMajor = try parser.optionalInteger().map(Int.init)
            case "devMinor": entry.devMinor = try parser.optionalInteger().map(Int.init)
            case "digest": entry.digest = try parser.optionalString()
            case "offset": entry.offset = try parser.optionalInteger()
            case "endOffset": entry.endOffset = try parser.optionalInteger()
            case "chunkOffset": entry.chunkOffset = try parser.optionalInteger()
            case "chunkSize": entry.chunkSize = try parser.optionalInteger()
            case "chunkDigest": entry.chunkDigest = try parser.optionalString()
            case "innerOffset": entry.innerOffset = try parser.optionalInteger()
            case "xattrs":
                guard try !parser.null() else { entry.xattrs = nil; return }
                var xattrs: [String: String] = [:]
                try parser.object { parser, name in xattrs[name] = try parser.string() }
                entry.xattrs = xattrs
            default: try parser.skipValue(depth: 2)
            }
        }
        guard let name else { throw Failure(reason: "entry without \"name\"", offset: start) }
        guard let type else { throw Failure(reason: "entry \"\(name)\" without \"type\"", offset: start) }
        entry.name = name
        entry.type = type
        return entry
    }

    // MARK: Values

    private func failure(_ reason: String) -> Failure { Failure(reason: reason, offset: position) }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private mutating func peek() throws -> UInt8 {
        skipWhitespace()
        guard position < bytes.count else { throw failure("unexpected end") }
        return bytes[position]
    }

    private mutating func expect(_ byte: UInt8) throws {
        guard try peek() == byte else { throw failure("expected \"\(Character(Unicode.Scalar(byte)))\"") }
        position += 1
    }

    private mutating func literal(_ word: StaticString) throws {
        let count = word.utf8CodeUnitCount
        guard position + count <= bytes.count,
              memcmp(bytes.baseAddress! + position, word.utf8Start, count) == 0 else { throw failure("invalid literal") }
        position += count
    }

    /// Consumes `null` if it comes next.
    private mutating func null() throws -> Bool {
        guard try peek() == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    /// `{ "key": value, ... }`, calling `member` with the parser positioned at each value.
    private mutating func object(_ member: (inout TOCJSONParser, String) throws -> Void) throws {
        try expect(UInt8(ascii: "{"))
        if try peek() == UInt8(ascii: "}") { position += 1; return }
        while true {
            let key = try string()
            try expect(UInt8(ascii: ":"))
            try member(&self, key)
            switch try peek() {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"): position += 1; return
            default: throw failure("expected \",\" or \"}\"")
            }
        }
    }

    private mutating func array(_ element: (inout TOCJSONParser) throws -> Void) throws {
        try expect(UInt8(ascii: "["))
        if try peek() == UInt8(ascii: "]") { position += 1; return }
        while true {
            try element(&self)
            switch try peek() {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"): position += 1; return
            default: throw failure("expected \",\" or \"]\"")
            }
        }
    }

    private mutating func optionalString() throws -> String? {
        try null() ? nil : try string()
    }

    private mutating func optionalInteger() throws -> Int64? {
        try null() ? nil : try integer()
    }

    private mutating func integer() throws -> Int64 {
        _ = try peek()
        let negative = bytes[position] == UInt8(ascii: "-")
        if negative { position += 1 }
        let start = position
        var value: Int64 = 0
        while position < bytes.count, bytes[position] >= 0x30, bytes[position] <= 0x39 {
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times.addingReportingOverflow(Int64(bytes[position] - 0x30))
            guard !o1, !o2 else { throw failure("number out of range") }
            value = sum
            position += 1
        }
        guard position > start else { throw failure("expected a number") }
        if position < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[position]) {
            throw failure("expected an integer")
        }
        return negative ? -value : value
    }

    private mutating func string() throws -> String {
        try expect(UInt8(ascii: "\""))
        let start = position
        // Fast path: no escapes.
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
                position += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            guard byte >= 0x20 else { throw failure("control character in a string") }
            position += 1
        }
        var decoded = Array(bytes[start..<position])
        while position < bytes.count {
            let byte = bytes[position]
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: decoded, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard position < bytes.count else { throw failure("unexpected end") }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(escape)
                case UInt8(ascii: "b"): decoded.append(0x08)
                case UInt8(ascii: "f"): decoded.append(0x0C)
                case UInt8(ascii: "n"): decoded.append(0x0A)
                case UInt8(ascii: "r"): decoded.append(0x0D)
                case UInt8(ascii: "t"): decoded.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        // A high surrogate must be followed by an escaped low one.
                        guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"),
                              bytes[position + 1] == UInt8(ascii: "u") else { throw failure("unpaired surrogate") }
                        position += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw failure("unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw failure("unpaired surrogate")
                    }
                    guard let character = Unicode.Scalar(scalar) else { throw failure("invalid \\u escape") }
                    decoded.append(contentsOf: String(character).utf8)
                default: throw failure("invalid escape")
                }
            default:
                guard byte >= 0x20 else { throw failure("control character in a string") }
                decoded.append(byte)
            }
        }
        throw failure("unterminated string")
    }

    private mutating func hex4() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw failure("unexpected end") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt8
            switch byte {
            case 0x30...0x39: digit = byte - 0x30
            case 0x41...0x46: digit = byte - 0x41 + 10
            case 0x61...0x66: digit = byte - 0x61 + 10
            default: throw failure("invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }

    /// Skips any value: what an unknown key holds.
    private mutating func skipValue(depth: Int) throws {
        guard depth < Self.maxDepth else { throw failure("nested too deeply") }
        switch try peek() {
        case UInt8(ascii: "\""): _ = try string()
        case UInt8(ascii: "{"): try object { parser, _ in try parser.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["): try array { parser in try parser.skipValue(depth: depth + 1) }
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default:
            // A number of any form.
            let start = position
            while position < bytes.count, "+-.0123456789eE".utf8.contains(bytes[position]) { position += 1 }
            guard position > start else { throw failure("unexpected character") }
        }
    }
}
