/// A `Content-Range` header of a 206 answer, parsed strictly (RFC 9110 §14.4):
/// `bytes first-last/complete` with `0 ≤ first ≤ last < complete`, or `bytes first-last/*`
/// when the server does not know the length. Every number is ASCII digits only (no sign, no
/// spaces inside), at most 18 of them, so it fits an Int64 and sums of two never overflow.
/// The unsatisfied form `bytes */complete` belongs to a 416, never to a 206, and is refused.
///
/// Registries are not trusted (DESIGN.md §9): this is the one place a Content-Range becomes
/// numbers, and no value it returns can make later arithmetic trap.
public struct ContentRange: Equatable, Sendable {
    /// First byte position of the part, inclusive.
    public let first: Int64
    /// Last byte position of the part, inclusive (`first ≤ last`).
    public let last: Int64
    /// The blob's size, when the server gave it (`last < completeLength`).
    public let completeLength: Int64?

    /// Bytes in the part: `last - first + 1`, at least 1.
    public var length: Int64 { last - first + 1 }

    /// Decimal digits a position may have: 10^18 - 1 < Int64.max, so `last + 1` cannot overflow.
    static let maxDigits = 18

    public init?(parsing header: String) {
        var text = Self.trimmed(header)
        guard text.hasPrefix("bytes ") else { return nil }
        text = text.dropFirst(6)
        guard let slash = text.firstIndex(of: "/"), let dash = text[..<slash].firstIndex(of: "-") else { return nil }
        guard let first = Self.number(text[..<dash]),
              let last = Self.number(text[text.index(after: dash)..<slash]),
              first <= last else { return nil }
        let complete = text[text.index(after: slash)...]
        if complete == "*" {
            completeLength = nil
        } else {
            guard let size = Self.number(complete), last < size else { return nil }
            completeLength = size
        }
        self.first = first
        self.last = last
    }

    /// The complete length in a 416's `Content-Range: bytes */complete` (RFC 9110 §14.4),
    /// or nil when the header is not of that form.
    public static func unsatisfiedLength(parsing header: String) -> Int64? {
        let text = trimmed(header)
        guard text.hasPrefix("bytes */") else { return nil }
        return number(text.dropFirst(8))
    }

    /// The header value without the optional whitespace around it (RFC 9110 §5.5).
    static func trimmed(_ header: String) -> Substring {
        var text = Substring(header)
        while text.first == " " || text.first == "\t" { text.removeFirst() }
        while text.last == " " || text.last == "\t" { text.removeLast() }
        return text
    }

    /// A non-negative decimal of 1 to ``maxDigits`` ASCII digits.
    static func number(_ text: Substring) -> Int64? {
        guard (1...maxDigits).contains(text.utf8.count), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            return nil
        }
        return Int64(text)
    }
}
