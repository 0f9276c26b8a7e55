import CLazyPullShims
import Foundation
import LazyPullImages
import LazyPullOCI

/// Starting lazypull's background processes: `executable ARGS` in a session of its own (so it
/// outlives its starter and a terminal's hangup), output appended to a log file.
public enum Daemon {
    /// The running lazypull binary.
    public static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// The layer host's own program, installed next to `lazypull`; `lazypull` itself (its
    /// hidden `fuse-host` command) where it is missing.
    static var layerHostExecutable: String { sibling("lazypull-fuse-host") }

    /// The control plane's own program, installed next to `lazypull`.
    public static var serveExecutable: String { sibling("lazypull-serve") }

    private static func sibling(_ name: String) -> String {
        let path = (executable as NSString).deletingLastPathComponent + "/" + name
        return access(path, X_OK) == 0 ? path : executable
    }

    static func spawn(_ arguments: [String], executable: String = Daemon.executable, log: String) throws -> pid_t {
        try FileManager.default.createDirectory(atPath: (log as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = lp_spawn_daemon(executable, argv, log, &pid)
        guard rc == 0 else {
            throw LazyPullError(.io, "cannot start \(executable) \(arguments.first ?? ""): \(String(cString: strerror(rc)))")
        }
        // Reap it when it ends so it does not linger as a zombie of a long-lived parent.
        let child = pid
        let reaper = Thread { var status: Int32 = 0; waitpid(child, &status, 0) }
        reaper.stackSize = 64 << 10
        reaper.start()
        return pid
    }

    /// How many times one client starts the process of a socket before giving up: a started
    /// process that ends without serving either lost the root to another one that ended in
    /// the meantime (then starting again is right) or cannot start at all.
    static let maximumStarts = 5

    /// Connects to `socket`, starting the process that serves it when nobody does, and waits
    /// (bounded) until it answers. One process serves a root: it holds `lock` while it runs,
    /// and one started while another holds it exits at once. So a process is started only
    /// when nobody answers and nobody holds `lock`: a holder that does not answer is starting
    /// (and will answer) or ending (and will let the lock go, then one is started).
    static func connect(to socket: String, lock: String, starting arguments: [String],
                        executable: String = Daemon.executable, log: String, what: String) throws -> JSONLineConnection {
        let deadline = Date().addingTimeInterval(30)
        var started: pid_t?
        var starts = 0
        while Date() < deadline {
            if let connection = try JSONLineConnection.connect(to: socket) { return connection }
            let ours = started.map { kill($0, 0) == 0 } ?? false
            if !ours && !isHeld(lock) {
                guard starts < maximumStarts else { break }
                started = try spawn(arguments, executable: executable, log: log)
                starts += 1
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let last = text.split(separator: "\n").last.map(String.init) ?? "no output"
        throw LazyPullError(.io, "the \(what) did not start (see \(log)): \(last)")
    }

    /// Whether some process holds the `flock(2)` lock on `path` (false when there is no such
    /// file yet). Probed with a shared, non-blocking lock that is let go at once.
    static func isHeld(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        while flock(fd, LOCK_SH | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            return errno == EWOULDBLOCK
        }
        return false
    }
}

/// The control plane's handle on the layer host.
public final class LayerHostClient: Sendable {
    let paths: ServicePaths

    public init(paths: ServicePaths) { self.paths = paths }

    /// One request on a fresh connection (the host may have been restarted since the last).
    func call(_ request: LayerHostRequest, start: Bool = true, retry: Bool = true) throws -> LayerHostReply? {
        let connection: JSONLineConnection?
        if start {
            connection = try Daemon.connect(to: paths.hostSocket, lock: paths.hostLock, starting: ["fuse-host", "--root", paths.root],
                                            executable: Daemon.layerHostExecutable, log: paths.hostLog, what: "layer host")
        } else {
            connection = try JSONLineConnection.connect(to: paths.hostSocket)
        }
        guard let connection else { return nil }
        try connection.send(request)
        guard let reply = try connection.receive(LayerHostReply.self) else {
            // A host ending as we connected closes without a word; every request is
            // idempotent, so ask its successor.
            if retry { return try call(request, start: start, retry: false) }
            throw LazyPullError(.io, "the layer host closed the connection (see \(paths.hostLog))")
        }
        if let error = reply.error { throw error.error }
        return reply
    }

    public func attach(_ spec: LazyLayerSpec) throws {
        _ = try call(LayerHostRequest(.attach, layer: spec))
    }

    /// Builds layers ahead of their attach and starts their startup files' fetch (their
    /// `mountpoint` is not used); returns once the host has read their TOC files.
    public func warm(_ specs: [LazyLayerSpec]) throws {
        _ = try call(LayerHostRequest(.warm, layers: specs))
    }

    /// Serves the merged tree of an image's lazy layers (bottom first) at `mountpoint`.
    public func attachMerged(_ specs: [LazyLayerSpec], at mountpoint: String) throws {
        _ = try call(LayerHostRequest(.attachMerged, layers: specs, mountpoint: mountpoint))
    }

    /// The served layers; empty when no host runs.
    public func status() throws -> [LazyLayerStatus] {
        try call(LayerHostRequest(.status), start: false)?.layers ?? []
    }

    /// Unmounts every layer and ends the host, if one runs.
    public func shutdown() throws {
        _ = try? call(LayerHostRequest(.shutdown), start: false, retry: false)
    }

    /// Starts the host if none runs, without waiting for it.
    public func startInBackground() {
        let thread = Thread { [self] in _ = try? call(LayerHostRequest(.status)) }
        thread.stackSize = 256 << 10
        thread.start()
    }
}
