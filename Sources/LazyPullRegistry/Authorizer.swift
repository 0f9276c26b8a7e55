import Foundation
import LazyPullOCI
import Synchronization

/// Answers registry challenges: Bearer tokens fetched per scope and cached until they
/// expire (Docker registry token authentication spec), or Basic credentials.
///
/// A Bearer realm is a URL the registry names, so it is not trusted: it must be `http` or
/// `https` with a host (``tokenURL(realm:registryUsesTLS:)``), and plain `http` only when the
/// registry itself is reached over plain http, so credentials never leave TLS. The token
/// server's answer is at most ``RegistryLimits/tokenAnswerBytes``.
final class Authorizer: Sendable {
    private struct Token { var value: String; var expires: ContinuousClock.Instant }
    private struct State {
        var tokens: [String: Token] = [:]
        var challenge: AuthChallenge?
        var credentials: Credentials??
    }

    private let state = Mutex(State())
    private let domain: String
    private let credentialLookup: @Sendable (String) throws -> Credentials?
    private let http: HTTPClient
    private let registryUsesTLS: Bool

    init(domain: String, http: HTTPClient, registryUsesTLS: Bool = true,
         credentials: @escaping @Sendable (String) throws -> Credentials?) {
        self.domain = domain
        self.http = http
        self.registryUsesTLS = registryUsesTLS
        self.credentialLookup = credentials
    }

    /// The `Authorization` value for `scope`, if any is known yet. A token fetch it needs
    /// ends within `timeout` when given.
    func authorization(scope: String, timeout: Duration? = nil) throws -> String? {
        let (challenge, token) = state.withLock { s -> (AuthChallenge?, Token?) in
            (s.challenge, s.tokens[scope])
        }
        guard let challenge else { return nil }
        switch challenge.scheme {
        case "bearer":
            if let token, token.expires > .now { return "Bearer \(token.value)" }
            return "Bearer \(try fetchToken(challenge: challenge, scope: scope, timeout: timeout))"
        case "basic":
            guard let c = try credentials() else { return nil }
            return "Basic " + Data("\(c.username):\(c.secret)".utf8).base64EncodedString()
        default:
            return nil
        }
    }

    /// Records the challenge of a 401 and drops the cached token for `scope`, so the next
    /// ``authorization(scope:)`` authenticates again (tokens expire, default after 60 s).
    func challenged(by response: HTTPResponse, scope: String) throws {
        let challenges = response.headerValues("www-authenticate").flatMap(AuthChallenge.parse)
        guard let chosen = challenges.first(where: { $0.scheme == "bearer" }) ?? challenges.first(where: { $0.scheme == "basic" }) else {
            throw LazyPullError(.unauthorized, "\(domain) answered 401 without a usable WWW-Authenticate challenge")
        }
        state.withLock { s in
            s.challenge = chosen
            s.tokens[scope] = nil
        }
    }

    private func credentials() throws -> Credentials? {
        if let known = state.withLock({ $0.credentials }) { return known }
        let found = try credentialLookup(domain)
        state.withLock { $0.credentials = .some(found) }
        return found
    }

    /// The token endpoint of a Bearer `realm`: an `http` or `https` URL with a host; plain
    /// `http` is refused when the registry is reached over TLS (it would carry credentials in
    /// clear text). Errors name the rule and a one-line, shortened form of the realm.
    static func tokenURL(realm: String?, registryUsesTLS: Bool, domain: String) throws -> URLComponents {
        guard let realm, !realm.isEmpty else {
            throw LazyPullError(.unauthorized, "\(domain) sent a Bearer challenge without a realm")
        }
        let shown = HTTPURLRule.printable(realm)
        guard let scheme = HTTPURLRule.scheme(of: realm), let components = URLComponents(string: realm) else {
            throw LazyPullError(.unauthorized, "\(domain) named token realm \"\(shown)\", only http and https URLs are allowed")
        }
        if scheme == "http" && registryUsesTLS {
            throw LazyPullError(.unauthorized, "\(domain) named token realm \"\(shown)\": plain http is not allowed for a registry reached over https")
        }
        return components
    }

    private func fetchToken(challenge: AuthChallenge, scope: String, timeout: Duration?) throws -> String {
        var components = try Self.tokenURL(realm: challenge.realm, registryUsesTLS: registryUsesTLS, domain: domain)
        let realm = HTTPURLRule.printable(challenge.realm ?? "")
        let creds = try credentials()
        var query = components.queryItems ?? []
        if let service = challenge.service { query.append(URLQueryItem(name: "service", value: service)) }
        query.append(URLQueryItem(name: "scope", value: scope))
        if let creds, !creds.username.isEmpty { query.append(URLQueryItem(name: "account", value: creds.username)) }
        components.queryItems = query
        guard let url = components.url?.absoluteString else {
            throw LazyPullError(.unauthorized, "\(domain) named an invalid token realm \"\(realm)\"")
        }
        var headers: [(String, String)] = [("Accept", "application/json")]
        if let creds {
            headers.append(("Authorization", "Basic " + Data("\(creds.username):\(creds.secret)".utf8).base64EncodedString()))
        }
        let (response, body) = try http.fetch(HTTPRequest(url: url, headers: headers, timeout: timeout),
                                              limit: RegistryLimits.tokenAnswerBytes)
        guard response.isSuccess else {
            let who = creds.map { "as \($0.username)" } ?? "anonymously"
            throw LazyPullError(.unauthorized, "token request to \(realm) for \(scope) \(who) failed: HTTP \(response.status)")
        }
        struct Answer: Decodable { var token: String?; var access_token: String?; var expires_in: Int? }
        guard let answer = try? JSONDecoder().decode(Answer.self, from: Data(body)),
              let token = answer.token ?? answer.access_token, !token.isEmpty else {
            throw LazyPullError(.unauthorized, "token server \(realm) gave no token for \(scope)")
        }
        // Between 10 s and a day, whatever the server says (a huge value must not overflow).
        let lifetime = min(max(answer.expires_in ?? 60, 10), 86_400)
        // Renew a little early, so a token does not expire between check and use.
        let expires = ContinuousClock.now + .seconds(lifetime - 5)
        state.withLock { $0.tokens[scope] = Token(value: token, expires: expires) }
        return token
    }
}
