import Foundation
import LazyPullOCI
import Synchronization

/// How to reach registries.
public struct RegistryOptions: Sendable {
    /// Force plain HTTP for every host (`--plain-http`); loopback hosts use it by default.
    public var plainHTTP = false
    public var http = HTTPOptions()
    public var retry = RetryPolicy()
    /// Overall deadline of a fetch collected in memory (manifests, indexes, configs, TOC
    /// ranges, blob tails, tokens), all attempts included, when ``retry`` sets none shorter:
    /// these have bounded sizes, and a registry that cannot deliver one in this time is
    /// treated as failed rather than waited for. Streamed layer downloads (`streamBlob` of
    /// an eager pull) have no overall deadline, only the rate floor of ``HTTPOptions``.
    public var documentDeadline: Duration = .seconds(600)
    public var credentials: @Sendable (String) throws -> Credentials? = { domain in
        try DockerCredentialStore().credentials(for: domain)
    }

    public init() {}

    /// Bounds every request by `timeout`, as lazy reads with `--fetch-timeout` need: all
    /// attempts of one request end within `timeout` + 10 % (``RetryPolicy/forFetchTimeout(_:)``),
    /// and connect and the rate-floor window are a third of it (at least 1 s), so a dead or
    /// stalled server leaves time for two more tries.
    public mutating func limitFetches(to timeout: Duration) {
        retry = .forFetchTimeout(timeout)
        let third = max(Duration.seconds(1), timeout / 3)
        http.stallTimeout = third
        http.connectTimeout = third
    }
}

/// Sizes lazypull accepts from a registry, whatever it claims (DESIGN.md §9).
public enum RegistryLimits {
    /// A manifest or index (`fetchManifest`), as containerd's 4 MiB order of magnitude.
    public static let manifestBytes = 8 << 20
    /// A blob collected in memory (`fetchBlob`: image configs) unless the caller asks less.
    public static let blobInMemoryBytes = 64 << 20
    /// A token server's answer (`Authorizer`).
    public static let tokenAnswerBytes = 1 << 20
    /// Redirects followed for one request.
    public static let redirects = 6
}

/// A client for one repository of an OCI distribution registry
/// (OCI distribution spec: "Pulling manifests", "Pulling blobs").
///
/// Handles authentication challenges, redirects (never forwarding `Authorization` to another
/// host), retries with backoff, and resumes interrupted blob downloads with `Range`.
///
/// Redirects: followed by this client, never by libcurl, at most ``RegistryLimits/redirects``.
/// A `Location` must be `http` or `https` (``HTTPURLRule``); anything else fails the request
/// with "registry redirected to gopher://…, only http and https are allowed". A registry
/// reached over https may not redirect to plain http: containerd follows such a redirect,
/// lazypull refuses it, so that nothing a TLS registry serves (tag-resolved manifests
/// included) travels in clear text or can be swapped on the way.
public final class RegistryClient: Sendable {
    public let reference: Reference
    let baseURL: String
    let http: HTTPClient
    let authorizer: Authorizer
    public let options: RegistryOptions
    let pullScope: String
    let pushScope: String

    public init(reference: Reference, options: RegistryOptions = RegistryOptions(), http: HTTPClient? = nil) {
        self.reference = reference
        self.options = options
        let client = http ?? HTTPClient(options: options.http)
        self.http = client
        let scheme = options.plainHTTP || reference.isLoopback ? "http" : "https"
        self.baseURL = "\(scheme)://\(reference.apiHost)/v2/\(reference.repository)"
        self.authorizer = Authorizer(domain: reference.domain, http: client, registryUsesTLS: scheme == "https",
                                     credentials: options.credentials)
        self.pullScope = "repository:\(reference.repository):pull"
        self.pushScope = "repository:\(reference.repository):pull,push"
    }

    // MARK: Manifests

    /// A manifest or index as served, checked against the digest it was asked by or that
    /// the registry claims in `Docker-Content-Digest`.
    public struct FetchedManifest: Sendable {
        public var descriptor: Descriptor
        public var bytes: [UInt8]
        public var document: ManifestDocument
    }

    /// GET `/v2/<name>/manifests/<reference>` with the four-type Accept header.
    public func fetchManifest(_ tagOrDigest: String, expected: Digest? = nil) throws -> FetchedManifest {
        let what = tagOrDigest.contains(":") ? "\(reference.name)@\(tagOrDigest)" : "\(reference.name):\(tagOrDigest)"
        let url = "\(baseURL)/manifests/\(tagOrDigest)"
        let request = HTTPRequest(url: url, headers: [("Accept", MediaType.manifestAccept)])
        var body: [UInt8] = []
        let response = try send(request, what: "manifest \(what)", overall: options.documentDeadline) { chunk in
            guard body.count + chunk.count <= RegistryLimits.manifestBytes else {
                throw LazyPullError(.invalidManifest, "manifest \(what) is larger than \(RegistryLimits.manifestBytes >> 20) MiB")
            }
            body.append(contentsOf: chunk)
        } restart: { body.removeAll() }
        let actual = Digest.sha256(of: body)
        if let expected {
            try expected.verify(actual, what: "manifest \(what)")
        }
        if let claimed = response.header("docker-content-digest"), let claimedDigest = try? Digest(parsing: claimed),
           claimedDigest.algorithm == "sha256" {
            try claimedDigest.verify(actual, what: "manifest \(what) (Docker-Content-Digest)")
        }
        let contentType = response.header("content-type")
        let document = try ManifestDocument.decode(body, contentType: contentType, what: reference.description)
        let mediaType: String
        switch document {
        case .index(let i): mediaType = i.mediaType ?? MediaType.ociIndex
        case .manifest(let m): mediaType = m.mediaType ?? MediaType.ociManifest
        }
        return FetchedManifest(descriptor: Descriptor(mediaType: mediaType, digest: actual, size: Int64(body.count)),
                               bytes: body, document: document)
    }

    /// An image resolved to one platform's manifest.
    public struct ResolvedImage: Sendable {
        /// The descriptor the reference names (an index or a manifest).
        public var target: Descriptor
        /// Index bytes when the reference named an index.
        public var index: FetchedManifest?
        public var manifest: FetchedManifest
        public var manifestValue: Manifest
    }

    /// Resolves the reference by tag or digest and picks `platform` from an index.
    public func resolve(platform: Platform) throws -> ResolvedImage {
        let top = try fetchManifest(reference.manifestReference, expected: reference.digest)
        switch top.document {
        case .manifest(let m):
            return ResolvedImage(target: top.descriptor, index: nil, manifest: top, manifestValue: m)
        case .index(let index):
            guard let chosen = PlatformMatcher(platform).best(index.manifests) else {
                let available = index.manifests.compactMap { $0.platform?.description }.joined(separator: ", ")
                throw LazyPullError(.platformNotFound,
                                    "\(reference) has no image for platform \(platform) (available: \(available.isEmpty ? "none" : available))")
            }
            let inner = try fetchManifest(chosen.digest.description, expected: chosen.digest)
            guard case .manifest(let m) = inner.document else {
                throw LazyPullError(.invalidManifest, "\(reference): index entry \(chosen.digest) is not an image manifest")
            }
            return ResolvedImage(target: top.descriptor, index: top, manifest: inner, manifestValue: m)
        }
    }

    // MARK: Blobs

    /// A small blob (config), verified against its descriptor.
    public func fetchBlob(_ descriptor: Descriptor, limit: Int = RegistryLimits.blobInMemoryBytes) throws -> [UInt8] {
        guard descriptor.size >= 0, descriptor.size <= limit else {
            throw LazyPullError(.invalidManifest, "blob \(descriptor.digest) is too large (\(descriptor.size) bytes)")
        }
        var body: [UInt8] = []
        try streamBlob(descriptor.digest, from: 0, overall: options.documentDeadline) { chunk in
            guard body.count + chunk.count <= descriptor.size else {
                throw LazyPullError(.digestMismatch, "blob \(descriptor.digest) from \(reference.domain) is longer than its descriptor says (\(descriptor.size) bytes)")
            }
            body.append(contentsOf: chunk)
        }
        try descriptor.digest.verify(Digest.sha256(of: body), what: "blob from \(reference.name)")
        return body
    }

    /// Streams blob `digest` from byte `offset` into `sink`. A transfer that breaks off is
    /// resumed with `Range` from where it stopped; a server that ignores `Range` (200) has
    /// the bytes already delivered skipped. The caller verifies the digest.
    public func streamBlob(_ digest: Digest, from offset: Int64,
                           sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try streamBlob(digest, from: offset, overall: nil, sink: sink)
    }

    /// ``streamBlob(_:from:sink:)`` ending within `overall` (and ``RetryPolicy/deadline``).
    func streamBlob(_ digest: Digest, from offset: Int64, overall: Duration?,
                    sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard offset >= 0 else {
            throw LazyPullError(.invalidArgument, "blob \(digest): negative offset \(offset)")
        }
        var delivered: Int64 = 0
        var skip: Int64 = 0
        let url = "\(baseURL)/blobs/\(digest)"
        let what = "blob \(digest)"
        try send(HTTPRequest(url: url), what: what, range: { (offset + delivered, nil) }, overall: overall, sink: { chunk in
            var bytes = chunk
            if skip > 0 {
                let drop = Int(min(Int64(bytes.count), skip))
                bytes = UnsafeRawBufferPointer(rebasing: bytes[drop...])
                skip -= Int64(drop)
                if bytes.isEmpty { return }
            }
            try sink(bytes)
            delivered += Int64(bytes.count)
        }, restart: {}, onHead: { status, headers in
            // 200 to a ranged request: the body starts at byte 0.
            skip = status == 200 ? offset + delivered : 0
            if status == 206 {
                try self.checkPartial(headers, startsAt: offset + delivered, what: what)
            }
        })
    }

    /// A 206 must say, in a valid `Content-Range`, that it starts at `first`: bytes from
    /// anywhere else would be taken for the ones asked for.
    private func checkPartial(_ headers: [(String, String)], startsAt first: Int64, what: String) throws {
        let value = headers.first { $0.0 == "content-range" }?.1
        guard let value, let range = ContentRange(parsing: value), range.first == first else {
            let shown = value.map { "\"\(HTTPURLRule.printable($0, limit: 80))\"" } ?? "none"
            throw LazyPullError(.registry, "\(what) from \(reference.domain): 206 with Content-Range \(shown), expected one starting at \(first)")
        }
    }

    /// Bytes `offset ..< offset + length` of blob `digest` with one `Range` request
    /// (RFC 9110 §14), collected in memory. See ``streamRange(_:offset:length:sink:)``.
    public func fetchRange(_ digest: Digest, offset: Int64, length: Int64) throws -> [UInt8] {
        guard length > 0 else { return [] }
        var body: [UInt8] = []
        // The length comes from image metadata: reserve what is sure to be cheap, grow past it.
        body.reserveCapacity(Int(min(length, 16 << 20)))
        try streamRange(digest, offset: offset, length: length, overall: options.documentDeadline) { body.append(contentsOf: $0) }
        return body
    }

    /// Streams bytes `offset ..< offset + length` of blob `digest` into `sink` in order, as
    /// they arrive, with one `Range` request (RFC 9110 §14.1.2). A transfer that breaks off is
    /// resumed from the first byte not delivered, so `sink` sees every byte exactly once. A 206
    /// is taken to start where asked (RFC 9110 §15.3.7) and is read to its end: aborting a
    /// transfer closes its connection, and the next request would pay for a new one. A 200
    /// (Range ignored) is read from byte 0 and cut off once the range is in. The caller
    /// verifies content against the digests it trusts; a throw from `sink` ends the fetch.
    public func streamRange(_ digest: Digest, offset: Int64, length: Int64,
                            sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try streamRange(digest, offset: offset, length: length, overall: nil, sink: sink)
    }

    /// ``streamRange(_:offset:length:sink:)`` ending within `overall` (and ``RetryPolicy/deadline``).
    func streamRange(_ digest: Digest, offset: Int64, length: Int64, overall: Duration?,
                     sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard length > 0 else { return }
        guard offset >= 0, case (let end, false) = offset.addingReportingOverflow(length) else {
            throw LazyPullError(.invalidArgument, "blob \(digest): invalid range of \(length) bytes at \(offset)")
        }
        var delivered: Int64 = 0       // bytes of the range passed to `sink`, over every attempt
        var position: Int64 = 0        // blob offset of the next byte the server sends
        var partial = false            // a 206: the body is the range asked for
        let what = "blob \(digest) range \(offset)-\(end - 1)"
        try send(HTTPRequest(url: "\(baseURL)/blobs/\(digest)"), what: what,
                 range: { (offset + delivered, end - 1) }, overall: overall, sink: { chunk in
            let chunkStart = position
            position += Int64(chunk.count)
            let from = max(offset + delivered, chunkStart), to = min(end, position)
            if from < to {
                try sink(UnsafeRawBufferPointer(rebasing: chunk[Int(from - chunkStart)..<Int(to - chunkStart)]))
                delivered += to - from
            }
            if position >= end && !partial { throw RangeComplete() }
            if position > end {
                throw LazyPullError(.registry, "\(what) from \(reference.domain): 206 body longer than the range asked for")
            }
        }, restart: {}, onHead: { status, headers in
            partial = status == 206
            position = partial ? offset + delivered : 0
            if partial { try self.checkPartial(headers, startsAt: offset + delivered, what: what) }
        }, stopSignal: { $0 is RangeComplete })
        guard delivered == length else {
            throw LazyPullError(.registry, "\(what) from \(reference.domain): short range, \(delivered) of \(length) bytes")
        }
    }

    /// The last `length` bytes of a blob and the blob's size, for when the size is not known
    /// yet: a suffix range (`Range: bytes=-N`, RFC 9110 §14.1.1), the size taken from
    /// `Content-Range`. A server that ignores Range sends the whole blob; its tail is kept.
    public func fetchTail(_ digest: Digest, length: Int64) throws -> (bytes: [UInt8], size: Int64) {
        guard length > 0, length <= Int64(RegistryLimits.blobInMemoryBytes) else {
            throw LazyPullError(.invalidArgument, "blob \(digest): invalid tail length \(length)")
        }
        let keep = Int(length)
        var body: [UInt8] = []
        var received: Int64 = 0
        var partial = false
        let request = HTTPRequest(url: "\(baseURL)/blobs/\(digest)",
                                  headers: [("Range", "bytes=-\(length)"), ("Accept-Encoding", "identity")])
        let what = "blob \(digest) last \(length) bytes"
        let response = try send(request, what: what, overall: options.documentDeadline, sink: { chunk in
            received += Int64(chunk.count)
            body.append(contentsOf: chunk)
            if !partial && body.count >= 2 * keep { body.removeFirst(body.count - keep) }
        }, restart: {
            body.removeAll(keepingCapacity: true)
            received = 0
        }, onHead: { status, _ in partial = status == 206 })
        guard partial else {
            return (Array(body.suffix(keep)), received)
        }
        // "bytes first-last/size": the last bytes of the blob, as many as arrived.
        let header = response.header("content-range")
        guard let header, let range = ContentRange(parsing: header), let size = range.completeLength,
              range.last == size - 1, range.length == Int64(body.count), body.count <= keep else {
            let shown = HTTPURLRule.printable(header ?? "", limit: 80)
            throw LazyPullError(.registry, "\(what) from \(reference.domain): invalid Content-Range \"\(shown)\" for \(body.count) bytes")
        }
        return (body, size)
    }

    /// Thrown by a sink to end a transfer early on purpose (a 200 answer to a Range request
    /// carries the whole blob; the bytes past the range are not needed).
    struct RangeComplete: Error {}

    // MARK: Pushing (OCI distribution spec "Pushing blobs", "Pushing manifests")

    public func blobExists(_ digest: Digest) throws -> Bool {
        let url = "\(baseURL)/blobs/\(digest)"
        do {
            try send(HTTPRequest(method: "HEAD", url: url), what: "blob \(digest)", sink: { _ in }, restart: {}, scope: pushScope)
            return true
        } catch let e as LazyPullError where e.code == .notFound {
            return false
        }
    }

    /// Uploads a blob in one request (POST a session, PUT the bytes with `?digest=`),
    /// unless the registry has it already.
    public func uploadBlob(_ bytes: [UInt8], digest: Digest) throws {
        if try blobExists(digest) { return }
        let start = try send(HTTPRequest(method: "POST", url: "\(baseURL)/blobs/uploads/", body: []),
                             what: "upload of \(digest)", sink: { _ in }, restart: {}, scope: pushScope)
        guard let location = start.header("location"),
              let session = URL(string: location, relativeTo: URL(string: baseURL))?.absoluteString else {
            throw LazyPullError(.registry, "\(reference.domain) started an upload without a Location")
        }
        let separator = session.contains("?") ? "&" : "?"
        try send(HTTPRequest(method: "PUT", url: "\(session)\(separator)digest=\(digest)",
                             headers: [("Content-Type", "application/octet-stream")], body: bytes),
                 what: "upload of \(digest)", sink: { _ in }, restart: {}, scope: pushScope)
    }

    public func putManifest(_ bytes: [UInt8], mediaType: String, tag: String) throws {
        try send(HTTPRequest(method: "PUT", url: "\(baseURL)/manifests/\(tag)", headers: [("Content-Type", mediaType)], body: bytes),
                 what: "manifest \(reference.name):\(tag)", sink: { _ in }, restart: {}, scope: pushScope)
    }

    // MARK: Transport

    /// Sends `request` with authentication, redirects and retries. `range`, when given,
    /// supplies the bytes of the blob wanted at each attempt: from `first` to `last`, or to
    /// the end when `last` is nil (no `Range` at all for the whole blob). `restart` is called
    /// before every attempt. The whole of it ends within the shorter of `overall` and
    /// ``RetryPolicy/deadline`` (see ``RetryPolicy`` for the bound).
    @discardableResult
    func send(_ request: HTTPRequest, what: String,
              range: (() -> (first: Int64, last: Int64?))? = nil,
              overall: Duration? = nil,
              sink: (UnsafeRawBufferPointer) throws -> Void,
              restart: () -> Void,
              onHead: (Int, [(String, String)]) throws -> Void = { _, _ in },
              stopSignal: (Error) -> Bool = { _ in false },
              scope: String? = nil) throws -> HTTPResponse {
        let scope = scope ?? pullScope
        let start = ContinuousClock.now
        let limit = [options.retry.deadline, overall].compactMap { $0 }.min()
        let deadline = limit.map { start + $0 }
        var attempt = 0
        var reauthorized = false
        var lastFailure: LazyPullError?
        while true {
            attempt += 1
            if let deadline, deadline - .now < RetryPolicy.minimumAttempt {
                throw timedOut(what, limit: limit, after: attempt - 1, lastFailure: lastFailure)
            }
            var retryAfter: String?
            do {
                restart()
                var attemptRequest = request
                if let range {
                    switch range() {
                    case (0, nil): break
                    case (let first, nil): attemptRequest.headers.append(("Range", "bytes=\(first)-"))
                    case (let first, let last?): attemptRequest.headers.append(("Range", "bytes=\(first)-\(last)"))
                    }
                    attemptRequest.headers.append(("Accept-Encoding", "identity"))
                }
                let response: HTTPResponse
                do {
                    response = try sendFollowingRedirects(attemptRequest, scope: scope, deadline: deadline,
                                                          sink: sink, onHead: onHead)
                } catch where stopSignal(error) {
                    return HTTPResponse(status: 200, headers: [], errorBody: [], url: attemptRequest.url)
                }
                if response.isSuccess { return response }
                if response.status == 401 && !reauthorized {
                    reauthorized = true
                    attempt -= 1
                    try authorizer.challenged(by: response, scope: scope)
                    continue
                }
                let failure = describe(response, what: what)
                guard RetryPolicy.isRetryable(status: response.status) else { throw failure }
                lastFailure = failure
                retryAfter = response.header("retry-after")
            } catch let error as LazyPullError where error.code == .transport {
                lastFailure = error
            }
            let failure = lastFailure ?? LazyPullError(.transport, "\(what) from \(reference.domain) failed")
            let elapsed = ContinuousClock.now - start
            guard var wait = options.retry.delay(afterAttempt: attempt, retryAfter: retryAfter, elapsed: elapsed) else {
                throw LazyPullError(failure.code, "\(failure.message) (gave up after \(attempt) attempts)")
            }
            if let deadline {
                let left = deadline - .now
                guard left - wait >= RetryPolicy.minimumAttempt else { throw timedOut(what, limit: limit, after: attempt, lastFailure: failure) }
                wait = min(wait, left)
            }
            Thread.sleep(forTimeInterval: Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18)
        }
    }

    private func sendFollowingRedirects(_ request: HTTPRequest, scope: String, deadline: ContinuousClock.Instant?,
                                        sink: (UnsafeRawBufferPointer) throws -> Void,
                                        onHead: (Int, [(String, String)]) throws -> Void) throws -> HTTPResponse {
        var current = request
        let origin = Self.authority(of: request.url)
        for _ in 0..<RegistryLimits.redirects {
            var sent = current
            if Self.authority(of: current.url) == origin,
               let authorization = try authorizer.authorization(scope: scope,
                                                                timeout: deadline.map { $0 - .now } ?? options.documentDeadline) {
                sent.headers.append(("Authorization", authorization))
            }
            if let deadline {
                let left = deadline - .now
                guard left >= RetryPolicy.minimumAttempt else {
                    throw LazyPullError(.transport, "\(current.method) \(HTTPURLRule.printable(current.url)): fetch deadline reached")
                }
                sent.timeout = min(sent.timeout ?? left, left)
            }
            let response = try http.perform(sent, onHead: onHead, sink: sink)
            guard [301, 302, 303, 307, 308].contains(response.status), let location = response.header("location") else {
                return response
            }
            current.url = try Self.redirectTarget(location, from: current.url)
        }
        throw LazyPullError(.registry, "\(request.method) \(HTTPURLRule.printable(request.url)): too many redirects")
    }

    /// Where a redirect from `from` to `location` leads, checked: an http or https URL
    /// (``HTTPURLRule``), and not plain http when `from` was https.
    static func redirectTarget(_ location: String, from: String) throws -> String {
        guard let next = URL(string: location, relativeTo: URL(string: from))?.absoluteString else {
            throw LazyPullError(.registry, "registry redirected to an invalid location \"\(HTTPURLRule.printable(location))\"")
        }
        guard let scheme = HTTPURLRule.scheme(of: next) else {
            throw LazyPullError(.registry, "registry redirected to \(HTTPURLRule.printable(next)), only http and https are allowed")
        }
        if scheme == "http" && HTTPURLRule.scheme(of: from) == "https" {
            throw LazyPullError(.registry, "registry redirected from https to \(HTTPURLRule.printable(next)), plain http is not allowed after https")
        }
        return next
    }

    /// `scheme://host:port` of a URL, the unit that may see our credentials (a change of
    /// scheme is a change of origin, RFC 6454 §4).
    static func authority(of url: String) -> String {
        guard let c = URLComponents(string: url) else { return url }
        let scheme = c.scheme?.lowercased() ?? ""
        let port = c.port ?? (scheme == "https" ? 443 : 80)
        return "\(scheme)://\(c.host?.lowercased() ?? ""):\(port)"
    }

    /// The error of a request that ran out of its ``RetryPolicy/deadline``.
    private func timedOut(_ what: String, limit: Duration?, after attempts: Int, lastFailure: LazyPullError?) -> LazyPullError {
        let limit = limit ?? .zero
        let cause = lastFailure.map { ": \($0.message)" } ?? ""
        return LazyPullError(.transport, "\(what) from \(reference.domain): no answer within the fetch deadline of \(limit) (\(attempts) attempts)\(cause)")
    }

    private func describe(_ response: HTTPResponse, what: String) -> LazyPullError {
        struct ErrorBody: Decodable { struct E: Decodable { var code: String?; var message: String? }; var errors: [E]? }
        let detail = (try? JSONDecoder().decode(ErrorBody.self, from: Data(response.errorBody)))?.errors?.first
            .map { HTTPURLRule.printable([$0.code, $0.message].compactMap { $0 }.joined(separator: ": "), limit: 200) }
        let suffix = detail.map { " (\($0))" } ?? ""
        let host = reference.domain
        switch response.status {
        case 401, 403:
            return LazyPullError(.unauthorized, "\(what) at \(host): access denied, HTTP \(response.status)\(suffix)")
        case 404:
            return LazyPullError(.notFound, "\(what) not found at \(host): HTTP 404\(suffix)")
        case 416:
            // RFC 9110 §15.5.17: "bytes */complete-length" names the size the server has.
            let size = response.header("content-range").flatMap(ContentRange.unsatisfiedLength(parsing:))
            let has = size.map { ", the blob has \($0) bytes" } ?? ""
            return LazyPullError(.registry, "\(what) at \(host): HTTP 416, the range lies past the blob's end\(has)")
        default:
            return LazyPullError(.registry, "\(what) at \(host): HTTP \(response.status)\(suffix)")
        }
    }
}
