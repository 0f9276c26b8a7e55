/// An image reference, parsed and normalized as Docker and containerd do
/// (distribution/reference grammar: `[domain/]path[:tag][@digest]`).
///
/// `ubuntu` → `docker.io/library/ubuntu:latest`; a first component containing `.` or `:`,
/// or equal to `localhost`, is a registry host.
public struct Reference: Hashable, Sendable, CustomStringConvertible {
    /// Registry host as written in the reference, with port (`docker.io`, `127.0.0.1:5000`).
    public let domain: String
    /// Repository path inside the registry (`library/ubuntu`).
    public let repository: String
    public let tag: String?
    public let digest: Digest?

    public static let defaultDomain = "docker.io"
    static let maxNameLength = 255

    public init(domain: String, repository: String, tag: String?, digest: Digest?) {
        self.domain = domain
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    public init(parsing input: String) throws {
        func fail(_ why: String) -> LazyPullError {
            LazyPullError(.invalidReference, "invalid reference \"\(input)\": \(why)")
        }
        guard !input.isEmpty else { throw fail("empty reference") }
        guard !input.contains(where: { $0.isWhitespace }) else { throw fail("contains whitespace") }

        var rest = Substring(input)
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            do { digest = try Digest(parsing: String(rest[rest.index(after: at)...])) }
            catch let e as LazyPullError { throw fail(e.message) }
            rest = rest[..<at]
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            let t = String(rest[rest.index(after: colon)...])
            guard Self.isValidTag(t) else {
                throw fail("invalid tag \"\(t)\" (want up to 128 characters of [A-Za-z0-9_.-], not starting with . or -)")
            }
            tag = t
            rest = rest[..<colon]
        }
        guard !rest.isEmpty else { throw fail("missing repository name") }

        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var domain = Self.defaultDomain
        if components.count > 1, let first = components.first,
           first.contains(".") || first.contains(":") || first == "localhost" || first.first == "[" {
            guard Self.isValidDomain(first) else { throw fail("invalid registry host \"\(first)\"") }
            domain = first
            components.removeFirst()
        }
        if domain == "index.docker.io" { domain = Self.defaultDomain }
        if domain == Self.defaultDomain && components.count == 1 {
            components.insert("library", at: 0)
        }
        for c in components {
            if c.isEmpty { throw fail("empty path component") }
            if c.contains(where: { $0.isUppercase }) { throw fail("repository name must be lowercase") }
            guard Self.isValidPathComponent(c) else {
                throw fail("invalid path component \"\(c)\" (want [a-z0-9] separated by '.', '_', '__' or '-')")
            }
        }
        let repository = components.joined(separator: "/")
        guard domain.count + 1 + repository.count <= Self.maxNameLength else {
            throw fail("name longer than \(Self.maxNameLength) characters")
        }
        if tag == nil && digest == nil { tag = "latest" }
        self.init(domain: domain, repository: repository, tag: tag, digest: digest)
    }

    /// The normalized name without tag or digest (`docker.io/library/ubuntu`).
    public var name: String { "\(domain)/\(repository)" }

    public var description: String {
        var s = name
        if let tag { s += ":\(tag)" }
        if let digest { s += "@\(digest)" }
        return s
    }

    /// What to ask the registry's manifest endpoint for: the digest when present, else the tag.
    public var manifestReference: String { digest?.description ?? tag ?? "latest" }

    /// The host serving the registry API (Docker Hub's API lives on `registry-1.docker.io`).
    public var apiHost: String { domain == Self.defaultDomain ? "registry-1.docker.io" : domain }

    /// Whether the host defaults to plain HTTP, as containerd does for loopback.
    /// See ``isLoopbackHost(_:)``: decided by parsing the address, never by a prefix.
    public var isLoopback: Bool { Self.isLoopbackHost(Self.hostWithoutPort(domain)) }

    /// Whether `host` (a registry host without its port; IPv6 with or without brackets) is a
    /// loopback address: exactly `localhost`, an IPv4 address in 127.0.0.0/8 written as four
    /// decimal octets (RFC 1122 §3.2.1.3; no leading zeros, which some resolvers read as
    /// octal), or the IPv6 loopback `::1` in any spelling (RFC 4291 §2.5.3). Everything
    /// else, `127.evil.example` and `127.1` included, is not: it gets HTTPS.
    public static func isLoopbackHost(_ host: String) -> Bool {
        if host == "localhost" { return true }
        var text = Substring(host)
        if text.hasPrefix("[") {
            guard text.hasSuffix("]"), text.count >= 2 else { return false }
            text = text.dropFirst().dropLast()
        }
        if text.contains(":") { return IPv6Text.isLoopback(text) }
        guard let octets = IPv4Text.octets(text) else { return false }
        return octets[0] == 127
    }

    /// Same repository, pinned to `digest`.
    public func withDigest(_ digest: Digest) -> Reference {
        Reference(domain: domain, repository: repository, tag: tag, digest: digest)
    }

    static func hostWithoutPort(_ domain: String) -> String {
        if domain.hasPrefix("[") , let close = domain.firstIndex(of: "]") {
            return String(domain[...close])
        }
        return domain.split(separator: ":").first.map(String.init) ?? domain
    }

    static func isValidTag(_ t: String) -> Bool {
        guard let first = t.unicodeScalars.first, t.unicodeScalars.count <= 128 else { return false }
        func word(_ u: Unicode.Scalar) -> Bool {
            u.isASCII && (u.properties.isAlphabetic || ("0"..."9").contains(u) || u == "_")
        }
        return word(first) && t.unicodeScalars.allSatisfy { word($0) || $0 == "." || $0 == "-" }
    }

    static func isValidPathComponent(_ c: String) -> Bool {
        let bytes = Array(c.utf8)
        func alnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) }
        guard let first = bytes.first, let last = bytes.last, alnum(first), alnum(last) else { return false }
        var i = 0
        while i < bytes.count {
            if alnum(bytes[i]) { i += 1; continue }
            // A separator run: ".", "_", "__", or one or more "-".
            var j = i
            while j < bytes.count && !alnum(bytes[j]) { j += 1 }
            let sep = bytes[i..<j]
            let ok = sep.elementsEqual([0x2e]) || sep.elementsEqual([0x5f]) || sep.elementsEqual([0x5f, 0x5f])
                || sep.allSatisfy { $0 == 0x2d }
            if !ok { return false }
            i = j
        }
        return true
    }

    static func isValidDomain(_ d: String) -> Bool {
        var host = Substring(d)
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            let inner = host[host.index(after: host.startIndex)..<close]
            guard !inner.isEmpty, inner.allSatisfy({ $0.isHexDigit || $0 == ":" }) else { return false }
            host = host[host.index(after: close)...]
            if host.isEmpty { return true }
            guard host.hasPrefix(":") else { return false }
            let port = host.dropFirst()
            return !port.isEmpty && port.allSatisfy(\.isNumber) && Int(port).map { $0 <= 65535 } == true
        }
        let parts = d.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { return false }
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].allSatisfy({ $0.isASCII && $0.isNumber }),
                  let port = Int(parts[1]), port <= 65535 else { return false }
        }
        let labels = parts[0].split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            guard let f = label.first, let l = label.last else { return false }
            return f.isASCII && (f.isLetter || f.isNumber) && l.isASCII && (l.isLetter || l.isNumber)
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }
}

/// Strict dotted-quad IPv4 text: four decimal octets 0...255, no leading zeros, nothing else.
enum IPv4Text {
    static func octets(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var result: [UInt8] = []
        for part in parts {
            guard (1...3).contains(part.utf8.count), part.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  part.utf8.count == 1 || part.utf8.first != 0x30,
                  let value = UInt8(part) else { return nil }
            result.append(value)
        }
        return result
    }
}

/// IPv6 text (RFC 4291 §2.2 forms 1 and 2: eight hex groups, `::` at most once; the
/// embedded-IPv4 form is not accepted) and whether it is `::1`.
enum IPv6Text {
    static func groups(_ text: Substring) -> [UInt16]? {
        func parse(_ side: Substring) -> [UInt16]? {
            if side.isEmpty { return [] }
            var out: [UInt16] = []
            for group in side.split(separator: ":", omittingEmptySubsequences: false) {
                guard (1...4).contains(group.utf8.count), group.allSatisfy(\.isHexDigit),
                      let value = UInt16(group, radix: 16) else { return nil }
                out.append(value)
            }
            return out
        }
        let halves = text.split(separator: "::", maxSplits: 2, omittingEmptySubsequences: false)
        switch halves.count {
        case 1:
            guard let all = parse(text), all.count == 8 else { return nil }
            return all
        case 2:
            guard let head = parse(halves[0]), let tail = parse(halves[1]), head.count + tail.count <= 7 else { return nil }
            return head + [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        default:
            return nil
        }
    }

    static func isLoopback(_ text: Substring) -> Bool {
        groups(text) == [0, 0, 0, 0, 0, 0, 0, 1]
    }
}
