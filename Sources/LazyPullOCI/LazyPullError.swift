/// The one error type of lazypull. Callers branch on ``code``, never on the message;
/// the message is a single line meant for the user and names what failed.
public struct LazyPullError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        case invalidReference
        case invalidArgument
        case invalidManifest
        case unsupportedMediaType
        case schema1Unsupported
        case platformNotFound
        case digestMismatch
        case notFound
        case unauthorized
        case registry
        case transport
        case invalidLayer
        case hostileLayer
        case io
        case alreadyExists
        case busy
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// The exit status of a command that fails with this error, as the README documents:
    /// 2 for what the user wrote (arguments, references, configuration), 1 for the rest.
    public var exitStatus: Int32 { code == .invalidArgument || code == .invalidReference ? 2 : 1 }
}

extension LazyPullError {
    /// An I/O failure of a system call, with the path it was about and `errno`'s text.
    public static func io(_ what: String, path: String, errno code: Int32) -> LazyPullError {
        LazyPullError(.io, "\(what) \(path): \(errnoText(code))")
    }

    /// `errno`'s text and, for the ones an operator meets, its name: "No space left on device
    /// (ENOSPC)", so a log search for the name finds it.
    public static func errnoText(_ code: Int32) -> String {
        let names: [Int32: String] = [
            ENOSPC: "ENOSPC", EDQUOT: "EDQUOT", EROFS: "EROFS", EACCES: "EACCES", EPERM: "EPERM", ENOENT: "ENOENT",
            ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EEXIST: "EEXIST", EIO: "EIO", ENOTCONN: "ENOTCONN", EBUSY: "EBUSY",
            ELOOP: "ELOOP", ENAMETOOLONG: "ENAMETOOLONG", EMFILE: "EMFILE", ENFILE: "ENFILE", ENOMEM: "ENOMEM",
        ]
        let text = String(cString: strerror(code))
        return names[code].map { "\(text) (\($0))" } ?? text
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
