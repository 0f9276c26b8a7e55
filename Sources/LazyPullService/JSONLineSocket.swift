import CLazyPullShims
import Foundation
import LazyPullOCI

/// A connected unix stream socket that carries one JSON document per line: the framing of
/// the control socket and of the layer host's socket.
public final class JSONLineConnection: @unchecked Sendable {
    private let fd: Int32
    private var buffer: [UInt8] = []

    init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    /// Connects to the socket at `path`; nil when nothing listens there.
    public static func connect(to path: String) throws -> JSONLineConnection? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw LazyPullError.io("cannot create a socket for", path: path, errno: errno) }
        var address = try UnixAddress(path)
        let rc = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        guard rc == 0 else {
            let e = errno
            close(fd)
            if e == ENOENT || e == ECONNREFUSED { return nil }
            throw LazyPullError.io("cannot connect to", path: path, errno: e)
        }
        return JSONLineConnection(fd: fd)
    }

    public func send<Message: Encodable>(_ message: Message) throws {
        var bytes = Array(try JSONEncoder().encode(message))
        bytes.append(UInt8(ascii: "\n"))
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw LazyPullError(.io, "connection closed while sending: \(String(cString: strerror(errno)))") }
            sent += n
        }
    }

    /// The next message, or nil when the peer closed the connection.
    public func receive<Message: Decodable>(_ type: Message.Type) throws -> Message? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<newline])
                buffer.removeFirst(newline + 1)
                do { return try JSONDecoder().decode(type, from: Data(line)) } catch {
                    throw LazyPullError(.io, "malformed message on a lazypull socket: \(error)")
                }
            }
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }
            buffer.append(contentsOf: chunk[..<n])
        }
    }
}

/// A listening unix stream socket; each connection is handled on a thread of its own.
public final class JSONLineListener: @unchecked Sendable {
    public let path: String
    private let fd: Int32

    /// Binds `path` (replacing a stale socket file) with mode 0600.
    public init(path: String) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw LazyPullError.io("cannot create a socket for", path: path, errno: errno) }
        var address = try UnixAddress(path)
        let previous = umask(0o077)
        let rc = address.withSockaddr { bind(fd, $0, $1) }
        umask(previous)
        guard rc == 0, listen(fd, 64) == 0 else {
            let e = errno
            close(fd)
            throw LazyPullError.io("cannot listen on", path: path, errno: e)
        }
    }

    deinit { close(fd) }

    /// Stops accepting: new clients find no socket (and start another server) while the
    /// connections already accepted finish.
    public func stopListening() {
        unlink(path)
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Accepts connections until the process ends.
    public func serve(_ handle: @escaping @Sendable (JSONLineConnection) -> Void) -> Never {
        while true {
            let client = lp_accept_cloexec(fd)
            guard client >= 0 else {
                if errno != EINTR && errno != ECONNABORTED { Thread.sleep(forTimeInterval: 0.01) }
                continue
            }
            let connection = JSONLineConnection(fd: client)
            let thread = Thread { handle(connection) }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }
}

/// `sockaddr_un` for a filesystem path (at most 107 bytes, unix(7)).
struct UnixAddress {
    private var storage = sockaddr_un()

    init(_ path: String) throws {
        storage.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: storage.sun_path)
        guard bytes.count < capacity else {
            throw LazyPullError(.invalidArgument, "socket path \(path) is longer than \(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &storage.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
    }

    mutating func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
}
