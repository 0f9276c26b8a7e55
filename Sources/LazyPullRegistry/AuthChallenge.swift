/// A parsed `WWW-Authenticate` challenge (RFC 7235 §4.1; Docker token authentication spec).
public struct AuthChallenge: Equatable, Sendable {
    public var scheme: String
    public var parameters: [String: String]

    public var realm: String? { parameters["realm"] }
    public var service: String? { parameters["service"] }
    public var scope: String? { parameters["scope"] }

    /// Parses every challenge in a header value, e.g.
    /// `Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"`.
    public static func parse(_ header: String) -> [AuthChallenge] {
        var challenges: [AuthChallenge] = []
        var s = Substring(header)
        func skipSpace() { while let c = s.first, c == " " || c == "\t" || c == "," { s.removeFirst() } }
        func token() -> String {
            var t = ""
            while let c = s.first, c != " ", c != "\t", c != ",", c != "=" { t.append(c); s.removeFirst() }
            return t
        }
        skipSpace()
        while !s.isEmpty {
            let scheme = token()
            guard !scheme.isEmpty else { s.removeFirst(); skipSpace(); continue }
            var challenge = AuthChallenge(scheme: scheme.lowercased(), parameters: [:])
            skipSpace()
            // auth-params until the next token that is not followed by "=" (a new scheme).
            while !s.isEmpty {
                let save = s
                let name = token()
                while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
                guard !name.isEmpty, s.first == "=" else { s = save; break }
                s.removeFirst()
                while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
                var value = ""
                if s.first == "\"" {
                    s.removeFirst()
                    while let c = s.first, c != "\"" {
                        s.removeFirst()
                        if c == "\\", let escaped = s.first { value.append(escaped); s.removeFirst() } else { value.append(c) }
                    }
                    if !s.isEmpty { s.removeFirst() }
                } else {
                    value = token()
                }
                challenge.parameters[name.lowercased()] = value
                skipSpace()
            }
            challenges.append(challenge)
            skipSpace()
        }
        return challenges
    }
}
