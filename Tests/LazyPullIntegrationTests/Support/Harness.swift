import Foundation
import Testing

/// Paths of the package under test.
enum Paths {
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.path
    }()
    static let fixtures = packageRoot + "/Tests/Fixtures/bin"
    static var lazypull: String {
        ProcessInfo.processInfo.environment["LAZYPULL_BIN"] ?? packageRoot + "/.build/debug/lazypull"
    }
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var succeeded: Bool { status == 0 }
}

struct CommandFailed: Error, CustomStringConvertible {
    var command: [String]
    var result: CommandResult
    var description: String {
        "\(command.joined(separator: " ")) exited \(result.status)\nstdout: \(result.stdout)\nstderr: \(result.stderr)"
    }
}

/// Starts a program with posix_spawn: stdin, stdout and stderr from/to the given files,
/// every other descriptor closed in the child (so daemons it starts hold none of ours).
func spawn(_ arguments: [String], environment: [String: String] = [:],
           stdin: String = "/dev/null", stdout: String, stderr: String) throws -> pid_t {
    var env = ProcessInfo.processInfo.environment
    env["PATH"] = Paths.fixtures + ":" + (env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin")
    for (k, v) in environment { env[k] = v }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    closeFrom3(&actions)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // Its own process group, so a test can stop it with everything it started.
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
    posix_spawnattr_setpgroup(&attributes, 0)
    let argv = (["/usr/bin/env"] + arguments).map { strdup($0) } + [nil]
    let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, "/usr/bin/env", &actions, &attributes, argv, envp)
    guard rc == 0 else {
        throw CommandFailed(command: arguments, result: .init(status: rc, stdout: "", stderr: "posix_spawn failed"))
    }
    return pid
}

/// glibc ≥ 2.34's `posix_spawn_file_actions_addclosefrom_np`, which Swift's Glibc module
/// does not declare.
private func closeFrom3(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>) {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return }
    _ = unsafeBitCast(symbol, to: AddCloseFrom.self)(actions, 3)
}

/// Waits for `pid` and returns its exit status (128+signal when killed).
func waitForExit(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    if status & 0x7f == 0 { return (status >> 8) & 0xff }
    return 128 + (status & 0x7f)
}

/// Runs a program to completion and captures its output (through files, not pipes).
@discardableResult
func run(_ arguments: [String], environment: [String: String] = [:], input: String? = nil,
         check: Bool = true) throws -> CommandResult {
    let scratch = NSTemporaryDirectory() + "lazypull-run-\(UUID().uuidString)"
    FileManager.default.createFile(atPath: scratch + ".in", contents: Data((input ?? "").utf8))
    defer { for ext in ["out", "err", "in"] { try? FileManager.default.removeItem(atPath: scratch + "." + ext) } }
    let pid = try spawn(arguments, environment: environment, stdin: scratch + ".in",
                        stdout: scratch + ".out", stderr: scratch + ".err")
    let status = waitForExit(pid)
    let result = CommandResult(status: status,
                               stdout: (try? String(contentsOfFile: scratch + ".out", encoding: .utf8)) ?? "",
                               stderr: (try? String(contentsOfFile: scratch + ".err", encoding: .utf8)) ?? "")
    if check && !result.succeeded { throw CommandFailed(command: arguments, result: result) }
    return result
}

/// Runs `lazypull` with a private state root.
@discardableResult
func lazypull(_ arguments: [String], root: String, environment: [String: String] = [:],
              check: Bool = true) throws -> CommandResult {
    guard let sub = arguments.first else { return try run([Paths.lazypull], check: check) }
    return try run([Paths.lazypull, sub, "--root", root] + arguments.dropFirst(), environment: environment, check: check)
}

/// A temporary directory removed (after unmounting anything below it) when dropped.
final class TemporaryDirectory {
    let path: String

    init(_ label: String) throws {
        let template = NSTemporaryDirectory() + "lazypull-test-\(label)-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard mkdtemp(&bytes) != nil else { throw CommandFailed(command: ["mkdtemp"], result: .init(status: errno, stdout: "", stderr: "")) }
        path = String(cString: bytes)
    }

    deinit {
        killProcesses(using: path)
        unmountAll(under: path)
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// SIGKILLs every process whose command line names `path` (lazypull's control plane and
/// layer host for a state root below it), and waits (bounded) until they are gone.
func killProcesses(using path: String) {
    func matching() -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { name -> pid_t? in
            guard let pid = pid_t(name), pid != getpid(),
                  let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { return nil }
            let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return arguments.contains { $0 == path || $0.hasPrefix(path + "/") } ? pid : nil
        }
    }
    let deadline = Date().addingTimeInterval(10)
    var pids = matching()
    while !pids.isEmpty && Date() < deadline {
        pids.forEach { kill($0, SIGKILL) }
        Thread.sleep(forTimeInterval: 0.02)
        pids = matching()
    }
}

/// Unmounts every mount at or below `path`, deepest first.
func unmountAll(under path: String) {
    guard let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return }
    let targets = mounts.split(separator: "\n").compactMap { line -> String? in
        let fields = line.split(separator: " ")
        guard fields.count > 1 else { return nil }
        let target = String(fields[1]).replacingOccurrences(of: "\\040", with: " ")
        return target == path || target.hasPrefix(path + "/") ? target : nil
    }
    for target in targets.sorted(by: { $0.count > $1.count }) {
        umount2(target, Int32(MNT_DETACH))
    }
}

/// A free TCP port on loopback (bound once and released; good enough for tests).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Debian's docker-registry on a loopback port, stopped when dropped.
final class TestRegistry {
    let dir: String
    let port: Int
    var host: String { "127.0.0.1:\(port)" }

    init(in parent: String, name: String = "registry", mode: [String] = ["plain"], storage: String? = nil) throws {
        dir = parent + "/" + name
        var lastError: Error?
        for _ in 0..<5 {
            let p = freePort()
            do {
                try run(["registry.sh", "start", dir, String(p)] + mode,
                        environment: storage.map { ["REGISTRY_STORAGE": $0] } ?? [:])
                port = p
                return
            } catch { lastError = error }
        }
        throw lastError!
    }

    deinit { _ = try? run(["registry.sh", "stop", dir], check: false) }
}

/// A background helper process (token issuer, fault proxy), killed when dropped.
final class BackgroundProcess {
    let pid: pid_t

    init(_ arguments: [String], readyFile: String, log: String) throws {
        pid = try spawn(arguments, stdout: log, stderr: log)
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: readyFile) {
            var status: Int32 = 0
            let exited = waitpid(pid, &status, WNOHANG) == pid
            guard !exited, Date() < deadline else {
                if !exited { kill(-pid, SIGKILL); _ = waitForExit(pid) }
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                throw CommandFailed(command: arguments, result: .init(status: -1, stdout: "", stderr: "not ready: \(text)"))
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    private var stopped = false

    /// Ends the process and everything it started.
    func stop() {
        guard !stopped else { return }
        stopped = true
        kill(-pid, SIGTERM)
        let deadline = Date().addingTimeInterval(1)
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if Date() > deadline { kill(-pid, SIGKILL); _ = waitForExit(pid); break }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    deinit { stop() }
}

/// The fault proxy (Tests/Fixtures/bin/fault-proxy.py) on a loopback port in front of
/// `upstream`, logging one JSON line per request to `log`; `faults` are its mode options.
func faultProxy(port: Int, upstream: String, log: String, in dir: String, _ faults: [String] = []) throws -> BackgroundProcess {
    let ready = dir + "/proxy-ready-\(UUID().uuidString)"
    return try BackgroundProcess(
        ["fault-proxy.py", "--listen", String(port), "--upstream", "http://\(upstream)", "--log", log, "--ready-file", ready] + faults,
        readyFile: ready, log: dir + "/proxy.out")
}

/// containerd (Debian's 1.6) as a private instance, stopped when dropped.
final class TestContainerd {
    let dir: String
    var socket: String { dir + "/containerd.sock" }

    /// `proxySnapshotter`: (name, socket) of a proxy snapshotter to declare in its config.
    init(in parent: String, name: String = "containerd", proxySnapshotter: (String, String)? = nil) throws {
        dir = parent + "/" + name
        try run(["containerd.sh", "start", dir],
                environment: proxySnapshotter.map { ["CONTAINERD_PROXY_SNAPSHOTTER": "\($0.0)=\($0.1)"] } ?? [:])
    }

    /// Runs `ctr` (or `ctr-remote`) against this instance.
    @discardableResult
    func ctr(_ arguments: [String], tool: String = "ctr", check: Bool = true) throws -> CommandResult {
        // Bounded: a read through a broken mount must fail, not hang the suite.
        try run(["timeout", "120", tool, "--address", socket] + arguments, check: check)
    }

    /// The tree of `reference` as containerd unpacks and mounts it, as `treedump.py` lines.
    func referenceTree(_ reference: String, in scratch: String) throws -> String {
        let out = scratch + "/reference-\(UUID().uuidString).txt"
        try run(["reference-tree.sh", socket, reference, out])
        return try String(contentsOfFile: out, encoding: .utf8)
    }

    deinit { _ = try? run(["containerd.sh", "stop", dir], check: false) }
}

/// JSON lines of a fixture log.
func logLines(_ path: String) -> [[String: Any]] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap {
        try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
}
