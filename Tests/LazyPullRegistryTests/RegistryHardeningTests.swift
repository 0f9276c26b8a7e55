import Foundation
import LazyPullOCI
import Testing
@testable import LazyPullRegistry

@Suite("Content-Range parsing")
struct ContentRangeTests {
    /// header, (first, last, complete length) or nil when it must be refused.
    static let cases: [(String, (Int64, Int64, Int64?)?)] = [
        ("bytes 0-0/1", (0, 0, 1)),
        ("bytes 0-99/100", (0, 99, 100)),
        ("bytes 100-199/1000", (100, 199, 1000)),
        ("bytes 5-9/*", (5, 9, nil)),
        ("  bytes 1-2/3 ", (1, 2, 3)),
        ("bytes 999999999999999998-999999999999999998/999999999999999999",
         (999_999_999_999_999_998, 999_999_999_999_999_998, 999_999_999_999_999_999)),
        // Refused: negative, overflowing, inverted, out of the blob, malformed.
        ("bytes 0-0/-9223372036854775808", nil),
        ("bytes 0-0/9223372036854775807", nil),
        ("bytes 0-0/99999999999999999999999", nil),
        ("bytes 0-9223372036854775807/9223372036854775807", nil),
        ("bytes -1-0/10", nil),
        ("bytes 0--1/10", nil),
        ("bytes +1-2/10", nil),
        ("bytes 5-4/10", nil),
        ("bytes 0-10/10", nil),
        ("bytes 10-10/10", nil),
        ("bytes 0-0/0", nil),
        ("bytes */10", nil),
        ("bytes 0-1", nil),
        ("bytes 0-/10", nil),
        ("bytes -5/10", nil),
        ("bytes /", nil),
        ("bytes ", nil),
        ("", nil),
        ("bytes=0-1/10", nil),
        ("items 0-1/10", nil),
        ("bytes 0x1-2/10", nil),
        ("bytes 1 -2/10", nil),
        ("bytes 1-2/10/11", nil),
        ("bytes 1-2/1*", nil),
        ("bytes ０-1/10", nil),
    ]

    @Test(arguments: cases.indices)
    func parses(index: Int) {
        let (header, expected) = Self.cases[index]
        let parsed = ContentRange(parsing: header)
        if let (first, last, complete) = expected {
            #expect(parsed == ContentRange(first: first, last: last, completeLength: complete), "\(header)")
            #expect(parsed?.length == last - first + 1)
        } else {
            #expect(parsed == nil, "\(header)")
        }
    }

    /// A 416's `bytes */complete`: the size the server has, for the error message.
    @Test(arguments: [
        ("bytes */512", 512), (" bytes */0 ", 0), ("bytes */999999999999999999", 999_999_999_999_999_999),
        ("bytes */-1", nil), ("bytes */9223372036854775808", nil), ("bytes */", nil), ("bytes 0-1/2", nil),
        ("bytes */*", nil), ("", nil),
    ] as [(String, Int64?)])
    func unsatisfied(header: String, size: Int64?) {
        #expect(ContentRange.unsatisfiedLength(parsing: header) == size, "\(header)")
    }
}

extension ContentRange {
    init(first: Int64, last: Int64, completeLength: Int64?) {
        self = ContentRange(parsing: "bytes \(first)-\(last)/\(completeLength.map(String.init) ?? "*")")!
    }
}

@Suite("Redirect and realm URL rules")
struct URLRuleTests {
    /// location, from, the resolved URL or the words the error must contain.
    enum Outcome: Sendable { case success(String), failure(String) }
    static let redirects: [(String, String, Outcome)] = [
        ("https://cdn.example/blob?x=1", "https://reg.example/v2/a/blobs/sha256:1", .success("https://cdn.example/blob?x=1")),
        ("/other/path", "https://reg.example/v2/a/blobs/sha256:1", .success("https://reg.example/other/path")),
        ("http://127.0.0.2:5000/blob", "http://127.0.0.1:5000/v2/a", .success("http://127.0.0.2:5000/blob")),
        ("HTTPS://cdn.example/b", "https://reg.example/v2/a", .success("HTTPS://cdn.example/b")),
        ("gopher://127.0.0.1:6379/_INFO", "https://reg.example/v2/a", .failure("registry redirected to gopher://127.0.0.1:6379/_INFO, only http and https are allowed")),
        ("file:///etc/shadow", "http://127.0.0.1:5000/v2/a", .failure("registry redirected to file:///etc/shadow, only http and https are allowed")),
        ("dict://127.0.0.1:11211/stat", "http://127.0.0.1:5000/v2/a", .failure("only http and https are allowed")),
        ("ftp://example/x", "https://reg.example/v2/a", .failure("only http and https are allowed")),
        ("http:///nohost", "http://127.0.0.1:5000/v2/a", .failure("only http and https are allowed")),
        ("http://cdn.example/blob", "https://reg.example/v2/a", .failure("plain http is not allowed after https")),
        ("gopher://x/\n\rInjected: yes", "https://reg.example/v2/a", .failure("only http and https are allowed")),
    ]

    @Test(arguments: redirects.indices)
    func redirect(index: Int) {
        let (location, from, expected) = Self.redirects[index]
        switch (Result { try RegistryClient.redirectTarget(location, from: from) }, expected) {
        case (.success(let url), .success(let want)):
            #expect(url == want)
        case (.failure(let error), .failure(let words)):
            let message = (error as? LazyPullError)?.message ?? "\(error)"
            #expect(message.contains(words), "\(message)")
            #expect(!message.contains("\n") && !message.contains("\r"), "\(message)")
        case (let got, _):
            Issue.record("\(location): got \(got), expected \(expected)")
        }
    }

    /// realm, registry over TLS, accepted (nil) or the words of the error.
    static let realms: [(String?, Bool, String?)] = [
        ("https://auth.example/token", true, nil),
        ("http://127.0.0.1:9000/token", false, nil),
        ("https://auth.example/token?service=x", false, nil),
        ("http://auth.example/token", true, "plain http is not allowed"),
        ("file:///etc/passwd", false, "only http and https URLs are allowed"),
        ("gopher://127.0.0.1:25/", true, "only http and https URLs are allowed"),
        ("dict://localhost:2628/", false, "only http and https URLs are allowed"),
        ("/token", false, "only http and https URLs are allowed"),
        ("not a url", false, "only http and https URLs are allowed"),
        ("", true, "without a realm"),
        (nil, true, "without a realm"),
    ]

    @Test(arguments: realms.indices)
    func realm(index: Int) {
        let (realm, tls, words) = Self.realms[index]
        do {
            let url = try Authorizer.tokenURL(realm: realm, registryUsesTLS: tls, domain: "reg.example")
            #expect(words == nil, "\(realm ?? "nil") accepted as \(url)")
        } catch {
            let message = (error as? LazyPullError)?.message ?? "\(error)"
            #expect(words != nil && message.contains(words!), "\(message)")
            #expect(message.contains("reg.example"))
        }
    }

    @Test func authorityIncludesScheme() {
        #expect(RegistryClient.authority(of: "https://Reg.example/v2") == "https://reg.example:443")
        #expect(RegistryClient.authority(of: "http://reg.example:443/v2") == "http://reg.example:443")
        #expect(RegistryClient.authority(of: "https://reg.example/v2") != RegistryClient.authority(of: "http://reg.example:443/v2"))
    }

    @Test func printableIsOneShortLine() {
        let long = "gopher://" + String(repeating: "a", count: 500) + "\n\u{7f}"
        let shown = HTTPURLRule.printable(long)
        #expect(shown.count <= 121 && !shown.contains("\n"))
        #expect(HTTPURLRule.printable("a\u{0}b\tc") == "a?b?c")
    }
}

@Suite("Deadlines")
struct DeadlineTests {
    @Test(arguments: [(Duration.zero, 1), (.milliseconds(1), 1), (.microseconds(1500), 2), (.seconds(3), 3000),
                      (.seconds(-5), 1), (.seconds(Int64.max / 2), Int(Int32.max))])
    func curlMilliseconds(duration: Duration, millis: Int) {
        #expect(duration.curlMilliseconds == millis)
    }

    @Test(arguments: [(Duration.milliseconds(100), 1), (.milliseconds(1001), 2), (.seconds(10), 10), (.seconds(1 << 40), 86_400)])
    func curlSeconds(duration: Duration, seconds: Int) {
        #expect(duration.curlSeconds == seconds)
    }

    @Test(arguments: ["99999999999999999999999", "9223372036854775807", "-1", "1e9", "Fri, 31 Dec 9999 23:59:59 GMT"])
    func retryAfterNeverTraps(value: String) {
        if let d = RetryPolicy.parseRetryAfter(value) { #expect(d >= .zero && d <= .seconds(86_400)) }
    }

    @Test func fetchTimeoutPolicy() {
        let policy = RetryPolicy.forFetchTimeout(.seconds(10))
        #expect(policy.deadline == .seconds(10))
        #expect(policy.budget <= .seconds(10))
        var options = RegistryOptions()
        options.limitFetches(to: .seconds(9))
        #expect(options.retry.deadline == .seconds(9))
        #expect(options.http.stallTimeout == .seconds(3) && options.http.connectTimeout == .seconds(3))
        options.limitFetches(to: .seconds(1))
        #expect(options.http.stallTimeout == .seconds(1))
    }
}
