import CCurl
import CLazyPullShims
import Foundation
import LazyPullOCI
import Synchronization

/// One HTTP request. Redirects are never followed by libcurl: the registry client follows
/// them itself so that `Authorization` never reaches another host, and checks each
/// `Location` with ``HTTPURLRule``.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]?
    /// The whole transfer (connect, request, every byte of the answer) ends within this
    /// (`CURLOPT_TIMEOUT_MS`); nil: only the connect timeout and the rate floor of
    /// ``HTTPOptions`` bound it.
    public var timeout: Duration?

    public init(method: String = "GET", url: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
                timeout: Duration? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }

    public func header(_ name: String) -> String? {
        headers.first { $0.0.caseInsensitiveCompare(name) == .orderedSame }?.1
    }
}

/// Status and headers of a response; the body went to the caller's sink, or into
/// ``errorBody`` (first 64 KiB, the transfer ends there) when the status is not 2xx.
public struct HTTPResponse: Sendable {
    public var status: Int
    /// Header names lowercased; repeated headers keep every value in order.
    public var headers: [(String, String)]
    public var errorBody: [UInt8]
    public var url: String

    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.0 == lower }?.1
    }

    public func headerValues(_ name: String) -> [String] {
        let lower = name.lowercased()
        return headers.filter { $0.0 == lower }.map(\.1)
    }

    public var isSuccess: Bool { (200..<300).contains(status) }
}

/// Settings that apply to every connection.
///
/// Every transfer has a rate floor: one that moves fewer than ``minimumRate`` bytes per
/// second for ``stallTimeout`` in a row is aborted (`CURLOPT_LOW_SPEED_LIMIT` /
/// `CURLOPT_LOW_SPEED_TIME`). Waiting for the first byte counts as 0 bytes/s, so a server that
/// accepts and never answers, or drips a few bytes a second, is cut after ``stallTimeout``.
/// An overall bound per request comes from ``HTTPRequest/timeout`` (the registry client sets
/// it from ``RetryPolicy/deadline``).
public struct HTTPOptions: Sendable {
    /// Skip TLS certificate verification (`--insecure`).
    public var insecureSkipVerify = false
    public var connectTimeout: Duration = .seconds(15)
    /// The window of the rate floor: a transfer below ``minimumRate`` this long is aborted.
    /// libcurl counts it in whole seconds (rounded up, at least 1).
    public var stallTimeout: Duration = .seconds(30)
    /// The rate floor in bytes per second (default 1 KiB/s: a registry that cannot send a
    /// kilobyte a second is treated as stalled).
    public var minimumRate = 1024
    public var userAgent = "lazypull/0.1"

    public init() {}
}

/// Which URLs lazypull lets libcurl fetch: `http` and `https` only (DESIGN.md §9), for the
/// registry, the redirects it answers with and the token realms it names. Anything else
/// (`file:`, `gopher:`, `dict:`, `ftp:` …) would let a registry read local files or talk to
/// local services. libcurl itself is held to the same two protocols on every handle
/// (`CURLOPT_PROTOCOLS_STR`, `CURLOPT_REDIR_PROTOCOLS_STR`), so a URL that slips past this
/// check still fails.
public enum HTTPURLRule {
    /// The protocols libcurl may use, in `CURLOPT_PROTOCOLS_STR` syntax.
    public static let curlProtocols = "http,https"

    /// The lowercased scheme of `url` if it is `http` or `https` with a host, else nil.
    public static func scheme(of url: String) -> String? {
        guard let c = URLComponents(string: url), let scheme = c.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = c.host, !host.isEmpty else { return nil }
        return scheme
    }

    /// `url` shortened to a one-line, at most 120-character form fit for an error message:
    /// control characters become `?`, so nothing a registry sends can add lines to it.
    public static func printable(_ url: String, limit: Int = 120) -> String {
        var out = ""
        for scalar in url.unicodeScalars {
            if out.unicodeScalars.count >= limit { out += "…"; break }
            out.unicodeScalars.append(scalar.value < 0x20 || scalar.value == 0x7f ? "?" : scalar)
        }
        return out
    }
}

extension Duration {
    /// Whole milliseconds, rounded up, clamped to 1 ... `Int32.max` (what libcurl's
    /// `long` millisecond options take on every platform without overflow).
    var curlMilliseconds: Int {
        let (seconds, atto) = components
        guard seconds >= 0 else { return 1 }
        guard seconds < Int64(Int32.max) / 1000 else { return Int(Int32.max) }
        let millis = seconds * 1000 + (atto + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int(max(1, millis))
    }

    /// Whole seconds, rounded up, clamped to 1 ... 86 400 (libcurl's `LOW_SPEED_TIME`).
    var curlSeconds: Int { min(86_400, max(1, (curlMilliseconds + 999) / 1000)) }
}

/// An HTTP/1.1 and HTTP/2 client over libcurl. Easy handles are pooled and share one
/// connection cache, DNS cache and TLS session cache, so requests to a registry reuse
/// connections across threads. Every call blocks its thread.
public final class HTTPClient: Sendable {
    private let share: SendablePointer
    private let idle = Mutex<[SendablePointer]>([])
    public let options: HTTPOptions

    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    public init(options: HTTPOptions = HTTPOptions()) {
        _ = Self.globalInit
        self.options = options
        self.share = SendablePointer(lp_curl_share_new()!)
    }

    deinit {
        for handle in idle.withLock({ $0 }) { curl_easy_cleanup(handle.raw) }
        lp_curl_share_free(share.raw)
    }

    /// Performs `request`. A 2xx body streams into `sink` in arrival order; a throw from
    /// `sink` aborts the transfer and is rethrown.
    /// `onHead` sees the status and headers of the final response before its first body byte.
    public func perform(_ request: HTTPRequest,
                        onHead: (Int, [(String, String)]) throws -> Void = { _, _ in },
                        sink: (UnsafeRawBufferPointer) throws -> Void) throws -> HTTPResponse {
        let handle = checkout()
        defer { checkin(handle) }
        return try withoutActuallyEscaping(sink) { sink in
            try withoutActuallyEscaping(onHead) { onHead in
                let transfer = Transfer(sink: sink, onHead: onHead)
                return try run(request, on: handle.raw, transfer: transfer)
            }
        }
    }

    /// Performs `request` and collects a 2xx body in memory (manifests, configs, tokens).
    public func fetch(_ request: HTTPRequest, limit: Int = 64 << 20) throws -> (HTTPResponse, [UInt8]) {
        var body: [UInt8] = []
        let response = try perform(request) { chunk in
            guard body.count + chunk.count <= limit else {
                throw LazyPullError(.registry, "\(request.method) \(request.url): response larger than \(limit) bytes")
            }
            body.append(contentsOf: chunk)
        }
        return (response, body)
    }

    private func checkout() -> SendablePointer {
        if let h = idle.withLock({ $0.popLast() }) { return h }
        return SendablePointer(curl_easy_init()!)
    }

    private func checkin(_ handle: SendablePointer) {
        curl_easy_reset(handle.raw)
        idle.withLock { $0.append(handle) }
    }

    private func run(_ request: HTTPRequest, on h: UnsafeMutableRawPointer, transfer: Transfer) throws -> HTTPResponse {
        guard HTTPURLRule.scheme(of: request.url) != nil else {
            throw LazyPullError(.registry, "\(request.method) \(HTTPURLRule.printable(request.url)): only http and https URLs are allowed")
        }
        let strings = CStrings()
        // http and https only, for the request and for any redirect (libcurl does not follow
        // redirects here, but the rule holds even if it did). Fail closed if libcurl refuses.
        guard lp_curl_setopt_string(h, CURLOPT_PROTOCOLS_STR, strings.keep(HTTPURLRule.curlProtocols)) == CURLE_OK,
              lp_curl_setopt_string(h, CURLOPT_REDIR_PROTOCOLS_STR, strings.keep(HTTPURLRule.curlProtocols)) == CURLE_OK else {
            throw LazyPullError(.transport, "libcurl cannot be restricted to http and https (CURLOPT_PROTOCOLS_STR needs libcurl 7.85 or later)")
        }
        lp_curl_setopt_pointer(h, CURLOPT_SHARE, share.raw)
        lp_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        lp_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)
        lp_curl_setopt_long(h, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2TLS))
        lp_curl_setopt_long(h, CURLOPT_BUFFERSIZE, 512 * 1024)
        lp_curl_setopt_long(h, CURLOPT_TCP_KEEPALIVE, 1)
        var connectTimeout = options.connectTimeout
        if let timeout = request.timeout {
            connectTimeout = min(connectTimeout, timeout)
            lp_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, timeout.curlMilliseconds)
        }
        lp_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, connectTimeout.curlMilliseconds)
        lp_curl_setopt_long(h, CURLOPT_LOW_SPEED_LIMIT, max(1, options.minimumRate))
        lp_curl_setopt_long(h, CURLOPT_LOW_SPEED_TIME, options.stallTimeout.curlSeconds)
        if options.insecureSkipVerify {
            lp_curl_setopt_long(h, CURLOPT_SSL_VERIFYPEER, 0)
            lp_curl_setopt_long(h, CURLOPT_SSL_VERIFYHOST, 0)
        }
        lp_curl_setopt_string(h, CURLOPT_URL, strings.keep(request.url))
        lp_curl_setopt_string(h, CURLOPT_USERAGENT, strings.keep(options.userAgent))

        switch request.method {
        case "GET": break
        case "HEAD": lp_curl_setopt_long(h, CURLOPT_NOBODY, 1)
        default: lp_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, strings.keep(request.method))
        }
        var bodyCopy: UnsafeMutablePointer<UInt8>?
        defer { bodyCopy?.deallocate() }
        if let body = request.body {
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(body.count, 1))
            p.initialize(from: body, count: body.count)
            bodyCopy = p
            lp_curl_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            lp_curl_setopt_pointer(h, CURLOPT_POSTFIELDS, p)
        }

        var list: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(list) }
        for (name, value) in request.headers {
            list = curl_slist_append(list, "\(name): \(value)")
        }
        if request.body != nil && request.header("Content-Type") == nil {
            list = curl_slist_append(list, "Content-Type: application/octet-stream")
        }
        // Never let a proxy or libcurl add "Expect: 100-continue" to uploads.
        list = curl_slist_append(list, "Expect:")
        lp_curl_setopt_pointer(h, CURLOPT_HTTPHEADER, list)

        let context = Unmanaged.passUnretained(transfer).toOpaque()
        lp_curl_setopt_data_cb(h, CURLOPT_HEADERFUNCTION) { ptr, size, count, user in
            let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
            return t.header(UnsafeRawBufferPointer(start: ptr, count: size * count)) ? size * count : 0
        }
        lp_curl_setopt_pointer(h, CURLOPT_HEADERDATA, context)
        lp_curl_setopt_data_cb(h, CURLOPT_WRITEFUNCTION) { ptr, size, count, user in
            let t = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
            return t.body(UnsafeRawBufferPointer(start: ptr, count: size * count)) ? size * count : 0
        }
        lp_curl_setopt_pointer(h, CURLOPT_WRITEDATA, context)

        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        let code = errorBuffer.withUnsafeMutableBufferPointer { buf -> CURLcode in
            lp_curl_setopt_pointer(h, CURLOPT_ERRORBUFFER, buf.baseAddress)
            return curl_easy_perform(h)
        }
        lp_curl_setopt_pointer(h, CURLOPT_ERRORBUFFER, nil)
        if let thrown = transfer.thrown { throw thrown }
        // A complete non-2xx head is the answer even when its body then ends early: cut by us
        // at ``Transfer/maxErrorBody``, or by a server that announced one length and sent
        // another. Its body only words the error (or carries nothing a redirect needs).
        let answered = transfer.headDone && !(200..<300).contains(transfer.status)
        guard code == CURLE_OK || answered else {
            let detail = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let text = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            throw LazyPullError(.transport, "\(request.method) \(request.url): \(text)")
        }
        var status = 0
        lp_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        if answered { status = transfer.status }
        return HTTPResponse(status: status, headers: transfer.headers, errorBody: transfer.errorBody, url: request.url)
    }
}

/// Per-transfer state reached from libcurl's callbacks.
private final class Transfer {
    let sink: (UnsafeRawBufferPointer) throws -> Void
    let onHead: (Int, [(String, String)]) throws -> Void
    var status = 0
    var headers: [(String, String)] = []
    /// The final header block (status 200 or more) ended.
    var headDone = false
    var errorBody: [UInt8] = []
    var thrown: Error?
    /// Header bytes received so far, over every header block of the transfer.
    var headerBytes = 0

    /// Header bytes a transfer may receive in all (status lines and 1xx blocks included);
    /// more aborts it. Registries send a few kilobytes; this bounds what a hostile one can
    /// make lazypull hold.
    static let maxHeaderBytes = 256 << 10

    init(sink: @escaping (UnsafeRawBufferPointer) throws -> Void,
         onHead: @escaping (Int, [(String, String)]) throws -> Void) {
        self.sink = sink
        self.onHead = onHead
    }

    /// Returns false to abort the transfer.
    func header(_ line: UnsafeRawBufferPointer) -> Bool {
        headerBytes += line.count
        guard headerBytes <= Self.maxHeaderBytes else {
            thrown = LazyPullError(.registry, "response headers larger than \(Self.maxHeaderBytes) bytes")
            return false
        }
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.isEmpty {
            // End of a header block; 1xx blocks are followed by the real one.
            guard status >= 200 else { return true }
            headDone = true
            do { try onHead(status, headers) } catch { thrown = error; return false }
            return true
        }
        if text.hasPrefix("HTTP/") {
            // A new status line (after 100 Continue, or an HTTP/2 response) starts a new header block.
            headers = []
            headDone = false
            let parts = text.split(separator: " ")
            status = parts.count > 1 && parts[1].utf8.count == 3 ? Int(parts[1]) ?? 0 : 0
            return true
        }
        guard let colon = text.firstIndex(of: ":") else { return true }
        let name = text[..<colon].lowercased()
        let value = text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        headers.append((name, value))
        return true
    }

    /// Bytes of a non-2xx body kept (for the registry's error message); the transfer ends
    /// there, so an endless error or redirect body costs nothing more.
    static let maxErrorBody = 64 << 10

    func body(_ chunk: UnsafeRawBufferPointer) -> Bool {
        if (200..<300).contains(status) {
            do { try sink(chunk) } catch { thrown = error; return false }
        } else {
            errorBody.append(contentsOf: chunk.prefix(max(0, Self.maxErrorBody - errorBody.count)))
            if errorBody.count >= Self.maxErrorBody { return false }
        }
        return true
    }
}

/// C strings that live as long as this object (libcurl copies most, but not all, strings).
private final class CStrings {
    private var storage: [UnsafeMutablePointer<CChar>] = []
    func keep(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        storage.append(p)
        return p
    }
    deinit { storage.forEach { free($0) } }
}

/// A raw pointer owned by a type that guards every use with its own lock.
struct SendablePointer: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer
    init(_ raw: UnsafeMutableRawPointer) { self.raw = raw }
}
