import Foundation
import LazyPullOCI

/// A user name and secret for a registry. An empty user name with a secret is an identity token.
public struct Credentials: Sendable, Equatable {
    public var username: String
    public var secret: String

    public init(username: String, secret: String) {
        self.username = username
        self.secret = secret
    }
}

/// Looks up credentials the way Docker's CLI stores them: `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`; `credHelpers[host]`, then `credsStore`, then `auths[host]`.
/// Docker Hub's entries are keyed `https://index.docker.io/v1/`.
public struct DockerCredentialStore: Sendable {
    public let configPath: String

    public init(configPath: String? = nil) {
        if let configPath {
            self.configPath = configPath
        } else if let dir = ProcessInfo.processInfo.environment["DOCKER_CONFIG"], !dir.isEmpty {
            self.configPath = dir + "/config.json"
        } else {
            let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
            self.configPath = home + "/.docker/config.json"
        }
    }

    private struct ConfigFile: Decodable {
        struct Entry: Decodable {
            var auth: String?
            var username: String?
            var password: String?
            var identitytoken: String?
        }
        var auths: [String: Entry]?
        var credHelpers: [String: String]?
        var credsStore: String?
    }

    /// Credentials for `domain` (as written in references, `docker.io` for Docker Hub), or nil.
    public func credentials(for domain: String) throws -> Credentials? {
        guard let data = FileManager.default.contents(atPath: configPath) else { return nil }
        let config: ConfigFile
        do {
            config = try JSONDecoder().decode(ConfigFile.self, from: data)
        } catch {
            throw LazyPullError(.invalidArgument, "cannot parse docker config \(configPath): \(error.localizedDescription)")
        }
        let key = domain == Reference.defaultDomain ? "https://index.docker.io/v1/" : domain
        if let helper = config.credHelpers?[domain] ?? config.credHelpers?[key] {
            return try Self.runHelper(helper, server: key)
        }
        if let store = config.credsStore, !store.isEmpty {
            if let found = try Self.runHelper(store, server: key) { return found }
        }
        for (server, entry) in config.auths ?? [:] where Self.normalize(server) == Self.normalize(key) {
            if let token = entry.identitytoken, !token.isEmpty {
                return Credentials(username: "", secret: token)
            }
            if let auth = entry.auth, !auth.isEmpty {
                guard let decoded = Data(base64Encoded: auth).flatMap({ String(data: $0, encoding: .utf8) }),
                      let colon = decoded.firstIndex(of: ":") else {
                    throw LazyPullError(.invalidArgument, "invalid auth entry for \(server) in \(configPath)")
                }
                return Credentials(username: String(decoded[..<colon]), secret: String(decoded[decoded.index(after: colon)...]))
            }
            if let user = entry.username, let pass = entry.password {
                return Credentials(username: user, secret: pass)
            }
        }
        return nil
    }

    /// `https://host/v1/` and `host` name the same registry in `auths`.
    static func normalize(_ server: String) -> String {
        var s = Substring(server)
        for prefix in ["https://", "http://"] where s.hasPrefix(prefix) { s = s.dropFirst(prefix.count) }
        return String(s.split(separator: "/").first ?? s)
    }

    /// Runs `docker-credential-<name> get` with the server on stdin; "not found" is nil.
    static func runHelper(_ name: String, server: String) throws -> Credentials? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["docker-credential-\(name)", "get"]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch {
            throw LazyPullError(.unauthorized, "cannot run credential helper docker-credential-\(name): \(error.localizedDescription)")
        }
        input.fileHandleForWriting.write(Data(server.utf8))
        try? input.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = (String(data: out, encoding: .utf8) ?? "") + (String(data: err, encoding: .utf8) ?? "")
        if process.terminationStatus != 0 {
            if text.lowercased().contains("credentials not found") { return nil }
            throw LazyPullError(.unauthorized, "credential helper docker-credential-\(name) failed for \(server): \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        struct Answer: Decodable { var Username: String; var Secret: String }
        guard let answer = try? JSONDecoder().decode(Answer.self, from: out) else {
            throw LazyPullError(.unauthorized, "credential helper docker-credential-\(name) gave an unreadable answer for \(server)")
        }
        return Credentials(username: answer.Username == "<token>" ? "" : answer.Username, secret: answer.Secret)
    }
}
