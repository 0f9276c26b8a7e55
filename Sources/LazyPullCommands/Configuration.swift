import Foundation
import LazyPullContent
import LazyPullOCI
import LazyPullService
import TOMLKit

/// `/etc/lazypull/config.toml` (docs/config.md lists every key). Every key is optional;
/// a missing file means the defaults.
struct Configuration: Decodable, Equatable {
    /// State directory; `--root` and `$LAZYPULL_ROOT` win over it.
    var root: String?
    var snapshotter = Snapshotter()
    var fetch = Fetch()
    var cache = Cache()

    static let defaultPath = "/etc/lazypull/config.toml"

    struct Snapshotter: Decodable, Equatable {
        /// The socket containerd's `[proxy_plugins.lazypull]` names.
        var address = "/run/lazypull/lazypull.sock"

        enum CodingKeys: String, CodingKey { case address }
        init() {}
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            address = try c.decodeIfPresent(String.self, forKey: .address) ?? address
        }
    }

    struct Fetch: Decodable, Equatable {
        /// A read of content that cannot be fetched fails with EIO after this long.
        var timeoutSeconds = 30
        /// Fetch every layer completely in the background after the prefetch.
        var background = true
        /// Plain HTTP for every registry (loopback registries always use it).
        var plainHTTP = false
        /// Fetch the files before `.prefetch.landmark` when a layer is mounted, and wait up to
        /// `prefetch_wait_seconds` for them before the mount is reported ready (by default not:
        /// the prefetch streams, and a read waits only for the chunks it needs).
        var prefetch = true
        var prefetchWaitSeconds = 0

        enum CodingKeys: String, CodingKey {
            case timeoutSeconds = "timeout_seconds", background, plainHTTP = "plain_http", prefetch
            case prefetchWaitSeconds = "prefetch_wait_seconds"
        }
        init() {}
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            timeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .timeoutSeconds) ?? timeoutSeconds
            background = try c.decodeIfPresent(Bool.self, forKey: .background) ?? background
            plainHTTP = try c.decodeIfPresent(Bool.self, forKey: .plainHTTP) ?? plainHTTP
            prefetch = try c.decodeIfPresent(Bool.self, forKey: .prefetch) ?? prefetch
            prefetchWaitSeconds = try c.decodeIfPresent(Int.self, forKey: .prefetchWaitSeconds) ?? prefetchWaitSeconds
        }
    }

    struct Cache: Decodable, Equatable {
        /// Soft limit of the cached layer data in bytes (0: none).
        var maxBytes: Int64 = 0

        enum CodingKeys: String, CodingKey { case maxBytes = "max_bytes" }
        init() {}
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            maxBytes = try c.decodeIfPresent(Int64.self, forKey: .maxBytes) ?? maxBytes
        }
    }

    enum CodingKeys: String, CodingKey { case root, snapshotter, fetch, cache }

    init() {}

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        root = try c.decodeIfPresent(String.self, forKey: .root)
        snapshotter = try c.decodeIfPresent(Snapshotter.self, forKey: .snapshotter) ?? snapshotter
        fetch = try c.decodeIfPresent(Fetch.self, forKey: .fetch) ?? fetch
        cache = try c.decodeIfPresent(Cache.self, forKey: .cache) ?? cache
    }

    /// Reads `path`; a missing file is the default configuration. A file that cannot be read
    /// or is not valid TOML for this schema is an error naming the file and, where the parser
    /// knows it, the line.
    static func load(_ path: String) throws -> Configuration {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 && errno == ENOENT { return Configuration() }
        guard fd >= 0 else { throw LazyPullError(.invalidArgument, "cannot read configuration \(path): \(String(cString: strerror(errno)))") }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        let data: Data
        do {
            data = try handle.readToEnd() ?? Data()
        } catch {
            throw LazyPullError(.invalidArgument, "cannot read configuration \(path): \(systemErrorText(error))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw LazyPullError(.invalidArgument, "configuration \(path) is not UTF-8 text")
        }
        let config: Configuration
        do {
            config = try TOMLDecoder().decode(Configuration.self, from: text)
        } catch let error as TOMLParseError {
            throw LazyPullError(.invalidArgument,
                                "\(path):\(error.source.begin.line): invalid TOML: \(error.description)")
        } catch let error as DecodingError {
            throw LazyPullError(.invalidArgument, "\(path): \(Self.describe(error))")
        } catch {
            throw LazyPullError(.invalidArgument, "cannot read configuration \(path): \(error)")
        }
        guard config.fetch.timeoutSeconds > 0 else {
            throw LazyPullError(.invalidArgument, "\(path): fetch.timeout_seconds must be positive")
        }
        guard config.fetch.prefetchWaitSeconds >= 0, config.cache.maxBytes >= 0 else {
            throw LazyPullError(.invalidArgument, "\(path): fetch.prefetch_wait_seconds and cache.max_bytes cannot be negative")
        }
        return config
    }

    /// A decoding error as `key.path: what is wrong`, on one line.
    static func describe(_ error: DecodingError) -> String {
        func key(_ path: [any CodingKey]) -> String { path.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .typeMismatch(let type, let context):
            return "\(key(context.codingPath)) must be \(Self.tomlName(of: type))"
        case .valueNotFound(let type, let context):
            return "\(key(context.codingPath)) must be \(Self.tomlName(of: type))"
        case .keyNotFound(let k, let context):
            // TOMLKit also reports a value of the wrong type this way.
            let path = context.codingPath.last?.stringValue == k.stringValue ? context.codingPath : context.codingPath + [k]
            return "\(key(path)) is missing or has the wrong type"
        case .dataCorrupted(let context):
            return "\(key(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    private static func tomlName(of type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int64.Type: return "an integer"
        case is Bool.Type: return "true or false"
        case is String.Type: return "a string"
        default: return "a table"
        }
    }

    var fetchSettings: FetchSettings {
        var settings = FetchSettings()
        settings.fetchTimeoutSeconds = fetch.timeoutSeconds
        settings.backgroundFetch = fetch.background
        settings.plainHTTP = fetch.plainHTTP
        settings.prefetch = fetch.prefetch
        settings.prefetchWaitSeconds = fetch.prefetchWaitSeconds
        settings.cacheLimitBytes = cache.maxBytes
        return settings
    }
}
