import Foundation
import LazyPullOCI
import Synchronization

/// How to reach registries.
public struct RegistryOptions: Sendable {
    /// Force plain HTTP for every host (`--plain-http`); loopback hosts use it by default.
    public var plainHTTP = false
    public var http = HTTPOptions()
    public var retry = RetryPolicy()
    public var credentials: @Sendable (String) throws -> Credentials? = { domain in
        try DockerCredentialStore().credentials(for: domain)
    }

    public init() {}
}

/// A client for one repository of an OCI distribution registry
/// (OCI distribution spec: "Pulling manifests", "Pulling blobs").
///
/// Handles authentication challenges, redirects (never forwarding `Authorization` to another
/// host), retries with backoff, and resumes interrupted blob downloads with `Range`.
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
        self.authorizer = Authorizer(domain: reference.domain, http: client, credentials: options.credentials)
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
        let response = try send(request, what: "manifest \(what)") { chunk in
            guard body.count + chunk.count <= 8 << 20 else {
                throw LazyPullError(.invalidManifest, "manifest \(what) is larger than 8 MiB")
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
    public func fetchBlob(_ descriptor: Descriptor, limit: Int = 64 << 20) throws -> [UInt8] {
        guard descriptor.size <= limit else {
            throw LazyPullError(.invalidManifest, "blob \(descriptor.digest) is too large (\(descriptor.size) bytes)")
        }
        var body: [UInt8] = []
        try streamBlob(descriptor.digest, from: 0) { chunk in
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
        var delivered: Int64 = 0
        var skip: Int64 = 0
        let url = "\(baseURL)/blobs/\(digest)"
        try send(HTTPRequest(url: url), what: "blob \(digest)", range: { (offset + delivered, nil) }, sink: { chunk in
            var bytes = chunk
            if skip > 0 {
                let drop = Int(min(Int64(bytes.count), skip))
                bytes = UnsafeRawBufferPointer(rebasing: bytes[drop...])
                skip -= Int64(drop)
                if bytes.isEmpty { return }
            }
            try sink(bytes)
            delivered += Int64(bytes.count)
        }, restart: {}, onHead: { status in
            // 200 to a ranged request: the body starts at byte 0.
            skip = status == 200 ? offset + delivered : 0
        })
    }

    /// Bytes `offset ..< offset + length` of blob `digest` with one `Range` request
    /// (RFC 9110 §14), collected in memory. See ``streamRange(_:offset:length:sink:)``.
    public func fetchRange(_ digest: Digest, offset: Int64, length: Int64) throws -> [UInt8] {
        guard length > 0 else { return [] }
        var body: [UInt8] = []
        body.reserveCapacity(Int(length))
        try streamRange(digest, offset: offset, length: length) { body.append(contentsOf: $0) }
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
        guard length > 0 else { return }
        let end = offset + length
        var delivered: Int64 = 0       // bytes of the range passed to `sink`, over every attempt
        var position: Int64 = 0        // blob offset of the next byte the server sends
        var partial = false            // a 206: the body is the range asked for
        let what = "blob \(digest) range \(offset)-\(end - 1)"
        try send(HTTPRequest(url: "\(baseURL)/blobs/\(digest)"), what: what,
                 range: { (offset + delivered, end - 1) }, sink: { chunk in
            let chunkStart = position
            position += Int64(chunk.count)
            let from = max(offset + delivered, chunkStart), to = min(end, position)
            if from < to {
                try sink(UnsafeRawBufferPointer(rebasing: chunk[Int(from - chunkStart)..<Int(to - chunkStart)]))
                delivered += to - from
            }
            if position >= end && !partial { throw RangeComplete() }
        }, restart: {}, onHead: { status in
            partial = status == 206
            position = partial ? offset + delivered : 0
        }, stopSignal: { $0 is RangeComplete })
        guard delivered == length else {
            throw LazyPullError(.registry, "\(what) from \(reference.domain): short range, \(delivered) of \(length) bytes")
        }
    }

    /// The last `length` bytes of a blob and the blob's size, for when the size is not known
    /// yet: a suffix range (`Range: bytes=-N`, RFC 9110 §14.1.1), the size taken from
    /// `Content-Range`. A server that ignores Range sends the whole blob; its tail is kept.
    public func fetchTail(_ digest: Digest, length: Int64) throws -> (bytes: [UInt8], size: Int64) {
        precondition(length > 0)
        let keep = Int(length)
        var body: [UInt8] = []
        var received: Int64 = 0
        var partial = false
        let request = HTTPRequest(url: "\(baseURL)/blobs/\(digest)",
                                  headers: [("Range", "bytes=-\(length)"), ("Accept-Encoding", "identity")])
        let what = "blob \(digest) last \(length) bytes"
        let response = try send(request, what: what, sink: { chunk in
            received += Int64(chunk.count)
            body.append(contentsOf: chunk)
            if !partial && body.count >= 2 * keep { body.removeFirst(body.count - keep) }
        }, restart: {
            body.removeAll(keepingCapacity: true)
            received = 0
        }, onHead: { status in partial = status == 206 })
        guard partial else {
            return (Array(body.suffix(keep)), received)
        }
        // "bytes first-last/size"
        guard let range = response.header("content-range"), range.hasPrefix("bytes "),
              let slash = range.firstIndex(of: "/"), let size = Int64(range[range.index(after: slash)...]),
              let dash = range.firstIndex(of: "-"), let first = Int64(range[range.index(range.startIndex, offsetBy: 6)..<dash]),
              let last = Int64(range[range.index(after: dash)..<slash]),
              last == size - 1, last - first + 1 == Int64(body.count), body.count <= keep else {
            throw LazyPullError(.registry, "\(what) from \(reference.domain): invalid Content-Range \"\(response.header("content-range") ?? "")\" for \(body.count) bytes")
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
    /// before every attempt.
    @discardableResult
    func send(_ request: HTTPRequest, what: String,
              range: (() -> (first: Int64, last: Int64?))? = nil,
              sink: (UnsafeRawBufferPointer) throws -> Void,
              restart: () -> Void,
              onHead: (Int) -> Void = { _ in },
              stopSignal: (Error) -> Bool = { _ in false },
              scope: String? = nil) throws -> HTTPResponse {
        let scope = scope ?? pullScope
        let start = ContinuousClock.now
        var attempt = 0
        var reauthorized = false
        while true {
            attempt += 1
            var lastFailure: LazyPullError
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
                    response = try sendFollowingRedirects(attemptRequest, scope: scope, sink: sink, onHead: onHead)
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
            let elapsed = ContinuousClock.now - start
            guard let wait = options.retry.delay(afterAttempt: attempt, retryAfter: retryAfter, elapsed: elapsed) else {
                throw LazyPullError(lastFailure.code, "\(lastFailure.message) (gave up after \(attempt) attempts)")
            }
            Thread.sleep(forTimeInterval: Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18)
        }
    }

    private func sendFollowingRedirects(_ request: HTTPRequest, scope: String,
                                        sink: (UnsafeRawBufferPointer) throws -> Void,
                                        onHead: (Int) -> Void) throws -> HTTPResponse {
        var current = request
        let origin = Self.authority(of: request.url)
        for _ in 0..<6 {
            var sent = current
            if Self.authority(of: current.url) == origin, let authorization = try authorizer.authorization(scope: scope) {
                sent.headers.append(("Authorization", authorization))
            }
            let response = try http.perform(sent, onHead: { status, _ in onHead(status) }, sink: sink)
            guard [301, 302, 303, 307, 308].contains(response.status), let location = response.header("location") else {
                return response
            }
            guard let next = URL(string: location, relativeTo: URL(string: current.url))?.absoluteString else {
                throw LazyPullError(.registry, "\(current.method) \(current.url): invalid redirect location \"\(location)\"")
            }
            current.url = next
        }
        throw LazyPullError(.registry, "\(request.method) \(request.url): too many redirects")
    }

    /// `host:port` of a URL, the unit that may see our credentials.
    static func authority(of url: String) -> String {
        guard let c = URLComponents(string: url) else { return url }
        let port = c.port ?? (c.scheme == "https" ? 443 : 80)
        return "\(c.host ?? ""):\(port)"
    }

    private func describe(_ response: HTTPResponse, what: String) -> LazyPullError {
        struct ErrorBody: Decodable { struct E: Decodable { var code: String?; var message: String? }; var errors: [E]? }
        let detail = (try? JSONDecoder().decode(ErrorBody.self, from: Data(response.errorBody)))?.errors?.first
            .map { [$0.code, $0.message].compactMap { $0 }.joined(separator: ": ") }
        let suffix = detail.map { " (\($0))" } ?? ""
        let host = reference.domain
        switch response.status {
        case 401, 403:
            return LazyPullError(.unauthorized, "\(what) at \(host): access denied, HTTP \(response.status)\(suffix)")
        case 404:
            return LazyPullError(.notFound, "\(what) not found at \(host): HTTP 404\(suffix)")
        default:
            return LazyPullError(.registry, "\(what) at \(host): HTTP \(response.status)\(suffix)")
        }
    }
}
