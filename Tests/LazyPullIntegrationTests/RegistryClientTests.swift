import Foundation
import Testing

/// Authentication, redirects, retries, verification and resumption against a real
/// registry, with a fault proxy only where a registry cannot misbehave on its own.
@Suite("Registry client", .serialized)
struct RegistryClientTests {
    /// Writes a docker config directory and returns the environment that points at it.
    func dockerConfig(_ dir: String, _ json: String) throws -> [String: String] {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try json.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        return ["DOCKER_CONFIG": dir]
    }

    @Test("Bearer token auth with credentials from a docker config file")
    func tokenAuth() throws {
        let tmp = try TemporaryDirectory("token")
        let issuerDir = tmp.path + "/issuer"
        let issuerPort = freePort()
        let issuer = try BackgroundProcess(
            ["token-issuer.py", "--port", String(issuerPort), "--dir", issuerDir, "--user", "alice:s3cret"],
            readyFile: issuerDir + "/ready", log: tmp.path + "/issuer.log")
        let registry = try TestRegistry(in: tmp.path, mode: [
            "token", "http://127.0.0.1:\(issuerPort)/token", "lazypull-test", issuerDir + "/issuer.crt"])
        try run(["make-small-image.sh", registry.host, "private:v1", "1"], environment: ["PUSH_CREDS": "alice:s3cret"])
        let ref = "\(registry.host)/private:v1"

        let anonymous = try lazypull(["pull", "--quiet", ref], root: tmp.path + "/root",
                                     environment: try dockerConfig(tmp.path + "/empty", "{}"), check: false)
        #expect(anonymous.status != 0)
        #expect(anonymous.stderr.contains("access denied") || anonymous.stderr.contains("401"), "\(anonymous.stderr)")

        let auth = Data("alice:s3cret".utf8).base64EncodedString()
        let env = try dockerConfig(tmp.path + "/docker", #"{"auths": {"\#(registry.host)": {"auth": "\#(auth)"}}}"#)
        try lazypull(["pull", "--quiet", ref], root: tmp.path + "/root", environment: env)
        let requests = logLines(issuerDir + "/requests.log")
        #expect(requests.contains { ($0["auth_given"] as? Bool) == true && ($0["status"] as? Int) == 200 })
        withExtendedLifetime(issuer) {}
    }

    @Test("htpasswd Basic auth, and credentials from a credential helper")
    func basicAuthAndHelper() throws {
        let tmp = try TemporaryDirectory("basic")
        let registry = try TestRegistry(in: tmp.path, mode: ["htpasswd", "bob", "hunter2"])
        try run(["make-small-image.sh", registry.host, "basic:v1", "1"], environment: ["PUSH_CREDS": "bob:hunter2"])
        let ref = "\(registry.host)/basic:v1"

        let denied = try lazypull(["pull", "--quiet", ref], root: tmp.path + "/r0",
                                  environment: try dockerConfig(tmp.path + "/none", "{}"), check: false)
        #expect(denied.status != 0)
        #expect(denied.stderr.contains(registry.host))

        let auth = Data("bob:hunter2".utf8).base64EncodedString()
        try lazypull(["pull", "--quiet", ref], root: tmp.path + "/r1",
                     environment: try dockerConfig(tmp.path + "/cfg", #"{"auths": {"http://\#(registry.host)": {"auth": "\#(auth)"}}}"#))

        let helperLog = tmp.path + "/helper.log"
        var env = try dockerConfig(tmp.path + "/helper", #"{"credHelpers": {"\#(registry.host)": "lazypulltest"}}"#)
        env["LAZYPULL_TEST_CRED_USER"] = "bob"
        env["LAZYPULL_TEST_CRED_PASS"] = "hunter2"
        env["LAZYPULL_TEST_CRED_LOG"] = helperLog
        try lazypull(["pull", "--quiet", ref], root: tmp.path + "/r2", environment: env)
        let calls = logLines(helperLog)
        #expect(calls.contains { ($0["action"] as? String) == "get" && (($0["stdin"] as? String) ?? "").contains(registry.host) })
    }

    @Test("a blob redirect to another host never receives Authorization")
    func redirectWithoutAuthorization() throws {
        let tmp = try TemporaryDirectory("redirect")
        let registry = try TestRegistry(in: tmp.path, mode: ["htpasswd", "bob", "hunter2"])
        try run(["make-small-image.sh", registry.host, "redirect:v1", "2"], environment: ["PUSH_CREDS": "bob:hunter2"])
        let proxyPort = freePort(), cdnPort = freePort()
        let log = tmp.path + "/proxy.log"
        let proxy = try faultProxy(port: proxyPort, upstream: registry.host, log: log, in: tmp.path, ["--redirect-port", String(cdnPort), "--upstream-auth", "bob:hunter2"])
        let auth = Data("bob:hunter2".utf8).base64EncodedString()
        let env = try dockerConfig(tmp.path + "/cfg", #"{"auths": {"127.0.0.1:\#(proxyPort)": {"auth": "\#(auth)"}}}"#)
        try lazypull(["pull", "--quiet", "127.0.0.1:\(proxyPort)/redirect:v1"], root: tmp.path + "/root", environment: env)

        let entries = logLines(log)
        let cdn = entries.filter { ($0["listener"] as? String) == "redirect" }
        #expect(!cdn.isEmpty, "no request reached the redirect target")
        #expect(cdn.allSatisfy { ($0["authorization_present"] as? Bool) == false })
        #expect(entries.contains { ($0["listener"] as? String) == "main" && ($0["authorization_present"] as? Bool) == true })
        withExtendedLifetime(proxy) {}
    }

    @Test("429 and 503 are retried, honouring Retry-After", arguments: [("429", ["--retry-after", "1"]), ("503", [])])
    func retries(status: String, extra: [String]) throws {
        let tmp = try TemporaryDirectory("retry")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-small-image.sh", registry.host, "retry:v1", "1"])
        let port = freePort()
        let log = tmp.path + "/proxy.log"
        let proxy = try faultProxy(port: port, upstream: registry.host, log: log, in: tmp.path, ["--fail-status", status, "--fail-count", "3"] + extra)
        try lazypull(["pull", "--quiet", "127.0.0.1:\(port)/retry:v1"], root: tmp.path + "/root")
        let statuses = logLines(log).compactMap { $0["status"] as? Int }
        #expect(statuses.filter { String($0) == status }.count == 3)
        withExtendedLifetime(proxy) {}
    }

    @Test("a blob whose bytes do not match its digest is rejected and nothing is committed")
    func digestMismatch() throws {
        let tmp = try TemporaryDirectory("mismatch")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-small-image.sh", registry.host, "lying:v1", "2"])
        let port = freePort()
        let proxy = try faultProxy(port: port, upstream: registry.host, log: tmp.path + "/proxy.log", in: tmp.path, ["--flip-byte"])
        let root = tmp.path + "/root"
        let result = try lazypull(["pull", "--quiet", "127.0.0.1:\(port)/lying:v1"], root: root, check: false)
        #expect(result.status != 0)
        #expect(result.stderr.contains("digest mismatch"), "\(result.stderr)")
        // Only the manifest (verified) may be stored; no layer or config blob, no image, no snapshot.
        let blobs = try FileManager.default.contentsOfDirectory(atPath: root + "/content/blobs/sha256")
        #expect(blobs.count <= 1)
        let images = try JSONSerialization.jsonObject(with: Data(try lazypull(["images", "--json"], root: root).stdout.utf8))
        #expect((images as? [Any])?.isEmpty == true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/snapshots").filter { $0 != "locks" }.isEmpty)
        withExtendedLifetime(proxy) {}
    }

    @Test("a download cut off half-way resumes with Range from where it stopped")
    func resume() throws {
        let tmp = try TemporaryDirectory("resume")
        let registry = try TestRegistry(in: tmp.path)
        try run(["make-small-image.sh", registry.host, "resume:v1", "8"])
        let port = freePort()
        let log = tmp.path + "/proxy.log"
        let cut = 3 * 1024 * 1024
        let proxy = try faultProxy(port: port, upstream: registry.host, log: log, in: tmp.path, ["--drop-after-bytes", String(cut), "--drop-count", "1"])
        let root = tmp.path + "/root"
        let ref = "127.0.0.1:\(port)/resume:v1"
        try lazypull(["pull", "--quiet", ref], root: root)
        let entries = logLines(log)
        #expect(entries.contains { ($0["fault"] as? String) == "drop" })
        #expect(entries.contains { ($0["range"] as? String) == "bytes=\(cut)-" }, "no resumed request in \(entries)")

        let mnt = tmp.path + "/mnt"
        try lazypull(["mount", "--eager", "--read-only", "--quiet", ref, mnt], root: root)
        defer { _ = try? lazypull(["umount", mnt], root: root, check: false) }
        #expect(FileManager.default.fileExists(atPath: mnt + "/data.bin"))
        withExtendedLifetime(proxy) {}
    }

    @Test("a registry that is down gives a one-line error naming the host")
    func registryDown() throws {
        let tmp = try TemporaryDirectory("down")
        let port = freePort()
        let result = try lazypull(["pull", "--quiet", "127.0.0.1:\(port)/nothing:v1"], root: tmp.path + "/root",
                                  check: false)
        #expect(result.status == 1)
        #expect(result.stderr.contains("127.0.0.1:\(port)"))
        #expect(result.stderr.split(separator: "\n").count == 1)
    }
}
