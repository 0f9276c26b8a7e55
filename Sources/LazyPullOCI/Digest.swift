import CCrypto

/// A content digest, `algorithm:encoded` (OCI image spec, descriptor.md "Digests").
/// Only `sha256` is produced; `sha512` is accepted when parsing.
public struct Digest: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let algorithm: String
    public let encoded: String

    public init(algorithm: String, encoded: String) throws {
        let expected: Int
        switch algorithm {
        case "sha256": expected = 64
        case "sha512": expected = 128
        default: throw LazyPullError(.invalidArgument, "unsupported digest algorithm \"\(algorithm)\"")
        }
        guard encoded.utf8.count == expected,
              encoded.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) })
        else {
            throw LazyPullError(.invalidArgument, "invalid \(algorithm) digest \"\(encoded)\": want \(expected) lowercase hex digits")
        }
        self.algorithm = algorithm
        self.encoded = encoded
    }

    public init(parsing string: String) throws {
        guard let colon = string.firstIndex(of: ":") else {
            throw LazyPullError(.invalidArgument, "invalid digest \"\(string)\": missing algorithm prefix")
        }
        try self.init(algorithm: String(string[..<colon]), encoded: String(string[string.index(after: colon)...]))
    }

    public var description: String { "\(algorithm):\(encoded)" }

    public static func < (a: Digest, b: Digest) -> Bool { a.description < b.description }

    public init(from decoder: Decoder) throws {
        let string = try decoder.singleValueContainer().decode(String.self)
        try self.init(parsing: string)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    /// The SHA-256 digest of `bytes`.
    public static func sha256<C: Collection>(of bytes: C) -> Digest where C.Element == UInt8 {
        let hasher = SHA256Hasher()
        hasher.update(Array(bytes))
        return hasher.finalize()
    }

    /// Throws ``LazyPullError/Code/digestMismatch`` unless `actual` equals `self`.
    public func verify(_ actual: Digest, what: String) throws {
        guard actual == self else {
            throw LazyPullError(.digestMismatch, "digest mismatch for \(what): expected \(self), got \(actual)")
        }
    }
}

/// Incremental SHA-256 over OpenSSL's EVP interface (hardware-accelerated where the CPU has
/// SHA-NI). One thread at a time.
public final class SHA256Hasher {
    private let context: OpaquePointer

    public init() {
        context = EVP_MD_CTX_new()!
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
    }

    deinit { EVP_MD_CTX_free(context) }

    public func update(_ buffer: UnsafeRawBufferPointer) {
        if buffer.count > 0 { EVP_DigestUpdate(context, buffer.baseAddress, buffer.count) }
    }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The digest of everything hashed so far; the hasher starts over afterwards.
    public func finalize() -> Digest {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &out, &length)
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
        let hexDigits = Array("0123456789abcdef".utf8)
        var hex = [UInt8]()
        hex.reserveCapacity(64)
        for byte in out { hex.append(hexDigits[Int(byte >> 4)]); hex.append(hexDigits[Int(byte & 15)]) }
        return try! Digest(algorithm: "sha256", encoded: String(decoding: hex, as: UTF8.self))
    }
}
