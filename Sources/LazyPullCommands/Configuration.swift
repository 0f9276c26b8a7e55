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

        enum CodingKeys: String, CodingKey {
            case timeoutSeconds = "timeout_seconds", background, plainHTTP = "plain_http"
        }
        init() {}
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            timeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .timeoutSeconds) ?? timeoutSeconds
            background = try c.decodeIfPresent(Bool.self, forKey: .background) ?? background
            plainHTTP = try c.decodeIfPresent(Bool.self, forKey: .plainHTTP) ?? plainHTTP
        }
    }

    enum CodingKeys: String, CodingKey { case root, snapshotter, fetch }

    init() {}

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        root = try c.decodeIfPresent(String.self, forKey: .root)
        snapshotter = try c.decodeIfPresent(Snapshotter.self, forKey: .snapshotter) ?? snapshotter
        fetch = try c.decodeIfPresent(Fetch.self, forKey: .fetch) ?? fetch
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
        return config
    }

    var remoteSettings: RemoteSnapshotSettings {
        var settings = RemoteSnapshotSettings()
        settings.fetchTimeoutSeconds = fetch.timeoutSeconds
        settings.backgroundFetch = fetch.background
        settings.plainHTTP = fetch.plainHTTP
        return settings
    }
}
