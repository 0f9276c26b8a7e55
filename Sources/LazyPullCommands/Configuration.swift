import Foundation
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

    /// Reads `path`; a missing file is the default configuration, a malformed one an error
    /// that names it.
    static func load(_ path: String) throws -> Configuration {
        guard let data = FileManager.default.contents(atPath: path) else { return Configuration() }
        let config: Configuration
        do {
            config = try TOMLDecoder().decode(Configuration.self, from: String(decoding: data, as: UTF8.self))
        } catch {
            throw LazyPullError(.invalidArgument, "cannot read \(path): \(error)")
        }
        guard config.fetch.timeoutSeconds > 0 else {
            throw LazyPullError(.invalidArgument, "\(path): fetch.timeout_seconds must be positive")
        }
        guard config.fetch.prefetchWaitSeconds >= 0, config.cache.maxBytes >= 0 else {
            throw LazyPullError(.invalidArgument, "\(path): fetch.prefetch_wait_seconds and cache.max_bytes cannot be negative")
        }
        return config
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
