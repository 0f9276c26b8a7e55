import LazyPullOCI

/// Writes tar headers (POSIX.1-2001 pax over ustar): names, link names, ids and sizes that do
/// not fit ustar fields, xattrs (`SCHILY.xattr.*`) and sub-second times go into a PAX record,
/// which GNU tar, Go's archive/tar and containerd all read.
public enum TarWriter {
    /// The header block(s) for `entry`; the caller writes the content and ``padding(for:)``.
    public static func header(for entry: TarEntry) -> [UInt8] {
        var pax: [(String, [UInt8])] = []
        var name = entry.name
        var prefix = ""
        if entry.type == .directory && !name.hasSuffix("/") { name += "/" }
        if name.utf8.count > 100 {
            if let split = ustarSplit(name) { (prefix, name) = split } else {
                pax.append(("path", Array(entry.name.utf8)))
                name = String(decoding: Array(entry.name.utf8.prefix(99)), as: UTF8.self)
            }
        }
        var linkName = entry.linkName
        if linkName.utf8.count > 100 {
            pax.append(("linkpath", Array(linkName.utf8)))
            linkName = ""
        }
        if entry.uid > 0o7777777 { pax.append(("uid", Array(String(entry.uid).utf8))) }
        if entry.gid > 0o7777777 { pax.append(("gid", Array(String(entry.gid).utf8))) }
        if entry.size > 0o77777777777 { pax.append(("size", Array(String(entry.size).utf8))) }
        if entry.mtime.nanoseconds != 0 {
            let fraction = String(entry.mtime.nanoseconds).leftPad(9)
            pax.append(("mtime", Array("\(entry.mtime.seconds).\(fraction)".utf8)))
        }
        for x in entry.xattrs { pax.append(("SCHILY.xattr." + x.name, x.value)) }

        var out: [UInt8] = []
        if !pax.isEmpty {
            var records: [UInt8] = []
            for (key, value) in pax {
                let body = Array(" \(key)=".utf8) + value + [0x0a]
                var length = body.count + 1
                while String(length).utf8.count + body.count != length { length = String(length).utf8.count + body.count }
                records += Array(String(length).utf8) + body
            }
            let paxEntry = TarEntry(name: "PaxHeaders.0/" + String(name.suffix(80)), type: .regular, mode: 0o644, uid: 0, gid: 0,
                                    size: Int64(records.count), mtime: (entry.mtime.seconds, 0), linkName: "",
                                    deviceMajor: 0, deviceMinor: 0, xattrs: [])
            out += block(paxEntry, name: String(paxEntry.name.prefix(100)), prefix: "", linkName: "", typeflag: UInt8(ascii: "x"))
            out += records + padding(for: Int64(records.count))
        }
        out += block(entry, name: name, prefix: prefix, linkName: linkName, typeflag: typeflag(entry.type))
        return out
    }

    /// Zero bytes up to the next 512-byte boundary after `size` bytes of content.
    public static func padding(for size: Int64) -> [UInt8] {
        [UInt8](repeating: 0, count: Int((512 - size % 512) % 512))
    }

    /// Two zero blocks: the end of an archive.
    public static let end = [UInt8](repeating: 0, count: 1024)

    static func typeflag(_ type: TarEntryType) -> UInt8 {
        switch type {
        case .regular: UInt8(ascii: "0")
        case .hardlink: UInt8(ascii: "1")
        case .symlink: UInt8(ascii: "2")
        case .characterDevice: UInt8(ascii: "3")
        case .blockDevice: UInt8(ascii: "4")
        case .directory: UInt8(ascii: "5")
        case .fifo: UInt8(ascii: "6")
        }
    }

    /// `prefix/name` with prefix ≤ 155 and name ≤ 100 bytes, split at a slash.
    static func ustarSplit(_ path: String) -> (String, String)? {
        let bytes = Array(path.utf8)
        guard bytes.count <= 256 else { return nil }
        for i in stride(from: min(bytes.count - 1, 155), through: 1, by: -1) where bytes[i] == UInt8(ascii: "/") {
            let name = bytes[(i + 1)...]
            if name.count <= 100 && !name.isEmpty {
                return (String(decoding: bytes[..<i], as: UTF8.self), String(decoding: name, as: UTF8.self))
            }
        }
        return nil
    }

    static func block(_ e: TarEntry, name: String, prefix: String, linkName: String, typeflag: UInt8) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, _ offset: Int, _ length: Int) {
            let b = Array(s.utf8.prefix(length))
            h.replaceSubrange(offset..<(offset + b.count), with: b)
        }
        func octal(_ v: Int64, _ offset: Int, _ length: Int) {
            let clamped = max(0, min(v, (1 << (3 * Int64(length - 1))) - 1))
            put(String(clamped, radix: 8).leftPad(length - 1, "0"), offset, length - 1)
        }
        put(name, 0, 100)
        octal(Int64(e.mode & 0o7777), 100, 8)
        octal(Int64(e.uid), 108, 8)
        octal(Int64(e.gid), 116, 8)
        octal(e.type == .regular ? e.size : 0, 124, 12)
        octal(e.mtime.seconds, 136, 12)
        h[156] = typeflag
        put(linkName, 157, 100)
        put("ustar\0", 257, 6)
        put("00", 263, 2)
        octal(Int64(e.deviceMajor), 329, 8)
        octal(Int64(e.deviceMinor), 337, 8)
        put(prefix, 345, 155)
        for i in 148..<156 { h[i] = 0x20 }
        let sum = h.reduce(0) { $0 + Int64($1) }
        put(String(sum, radix: 8).leftPad(6, "0") + "\0 ", 148, 8)
        return h
    }
}

extension String {
    func leftPad(_ width: Int, _ pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
