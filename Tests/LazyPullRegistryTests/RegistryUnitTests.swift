import Foundation
import LazyPullOCI
import Testing
@testable import LazyPullRegistry

@Suite("WWW-Authenticate challenges")
struct AuthChallengeTests {
    static let cases: [(String, [AuthChallenge])] = [
        (#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
         [AuthChallenge(scheme: "bearer", parameters: ["realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                                                        "scope": "repository:library/ubuntu:pull"])]),
        (#"Basic realm="Registry Realm""#, [AuthChallenge(scheme: "basic", parameters: ["realm": "Registry Realm"])]),
        (#"bearer realm=http://x/t, service = "a b""#,
         [AuthChallenge(scheme: "bearer", parameters: ["realm": "http://x/t", "service": "a b"])]),
        (#"Basic realm="a", Bearer realm="b",scope="repository:x:pull,push""#,
         [AuthChallenge(scheme: "basic", parameters: ["realm": "a"]),
          AuthChallenge(scheme: "bearer", parameters: ["realm": "b", "scope": "repository:x:pull,push"])]),
        (#"Bearer realm="with \"quote\"""#, [AuthChallenge(scheme: "bearer", parameters: ["realm": #"with "quote""#])]),
        ("", []),
    ]

    @Test(arguments: cases)
    func parses(header: String, expected: [AuthChallenge]) {
        #expect(AuthChallenge.parse(header) == expected)
    }
}

@Suite("Retry policy")
struct RetryPolicyTests {
    @Test(arguments: [(429, true), (500, true), (502, true), (503, true), (408, true), (501, false), (404, false), (401, false), (400, false)])
    func retryable(status: Int, expected: Bool) {
        #expect(RetryPolicy.isRetryable(status: status) == expected)
    }

    @Test func honoursRetryAfterAndBounds() {
        let policy = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(100), maxDelay: .seconds(1), budget: .seconds(10))
        #expect(policy.delay(afterAttempt: 1, retryAfter: "2", elapsed: .zero) == .seconds(2))
        #expect(policy.delay(afterAttempt: 1, retryAfter: "30", elapsed: .seconds(5)) == .seconds(5))
        #expect(policy.delay(afterAttempt: 3, retryAfter: nil, elapsed: .zero) == nil)
        #expect(policy.delay(afterAttempt: 1, retryAfter: nil, elapsed: .seconds(11)) == nil)
        for attempt in 1...2 {
            let d = policy.delay(afterAttempt: attempt, retryAfter: nil, elapsed: .zero)!
            let step = Duration.milliseconds(100) * (1 << (attempt - 1))
            #expect(d >= step / 2 && d <= step)
        }
    }

    @Test func parsesHTTPDate() {
        let future = Date().addingTimeInterval(3)
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let d = RetryPolicy.parseRetryAfter(f.string(from: future))
        #expect(d != nil && d! <= .seconds(3))
    }
}

@Suite("Docker credential store")
struct CredentialStoreTests {
    func withConfig(_ json: String, _ body: (DockerCredentialStore) throws -> Void) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lazypull-creds-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("config.json").path
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        try body(DockerCredentialStore(configPath: path))
    }

    @Test func readsAuthsEntries() throws {
        let hub = Data("hubuser:hubpass".utf8).base64EncodedString()
        let other = Data("u:p:with:colons".utf8).base64EncodedString()
        try withConfig(#"{"auths": {"https://index.docker.io/v1/": {"auth": "\#(hub)"}, "https://reg.example.com/v2/": {"auth": "\#(other)"}, "plain.example.com": {"username": "a", "password": "b"}}}"#) { store in
            let hubCreds = try store.credentials(for: "docker.io")
            let regCreds = try store.credentials(for: "reg.example.com")
            let plainCreds = try store.credentials(for: "plain.example.com")
            let unknown = try store.credentials(for: "unknown.example.com")
            #expect(hubCreds == Credentials(username: "hubuser", secret: "hubpass"))
            #expect(regCreds == Credentials(username: "u", secret: "p:with:colons"))
            #expect(plainCreds == Credentials(username: "a", secret: "b"))
            #expect(unknown == nil)
        }
    }

    @Test func rejectsBrokenFiles() throws {
        try withConfig("{not json") { store in
            #expect(throws: LazyPullError.self) { try store.credentials(for: "x") }
        }
        try withConfig(#"{"auths": {"x": {"auth": "!!!"}}}"#) { store in
            #expect(throws: LazyPullError.self) { try store.credentials(for: "x") }
        }
    }

    @Test func missingFileMeansNoCredentials() throws {
        #expect(try DockerCredentialStore(configPath: "/nonexistent/config.json").credentials(for: "docker.io") == nil)
    }
}
