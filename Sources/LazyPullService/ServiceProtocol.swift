import Foundation
import LazyPullImages
import LazyPullOCI

/// Where the processes of one state root meet: sockets, locks and logs under `<root>/run/`.
public struct ServicePaths: Sendable {
    public let root: String

    public init(root: String) { self.root = root }

    public var directory: String { "\(root)/run" }
    /// The control plane's socket, used by the CLI.
    public var controlSocket: String { "\(directory)/control.sock" }
    public var controlLock: String { "\(directory)/control.lock" }
    public var controlLog: String { "\(directory)/serve.log" }
    /// The layer host's socket, used by the control plane.
    public var hostSocket: String { "\(directory)/fuse-host.sock" }
    public var hostLock: String { "\(directory)/fuse-host.lock" }
    public var hostLog: String { "\(directory)/fuse-host.log" }
}

/// A ``LazyPullError`` on the wire.
public struct WireError: Codable, Sendable, Error {
    public var code: String
    public var message: String

    public init(_ error: Error) {
        if let error = error as? LazyPullError {
            code = error.code.rawValue
            message = error.message
        } else {
            code = LazyPullError.Code.io.rawValue
            message = "\(error)"
        }
    }

    public var error: LazyPullError {
        LazyPullError(LazyPullError.Code(rawValue: code) ?? .io, message)
    }
}

// MARK: Layer host

/// A request to the layer host. `attach` mounts a lazy layer (a no-op when it is served
/// already) and answers once it can be read; `attachMerged` serves several layers' merged
/// tree; `warm` builds layers ahead of their `attach` and starts their startup files' fetch;
/// `status` lists the served layers; `shutdown` unmounts them all and ends the host.
public struct LayerHostRequest: Codable, Sendable {
    public enum Operation: String, Codable, Sendable { case attach, attachMerged, warm, status, shutdown }
    public var operation: Operation
    public var layer: LazyLayerSpec?
    /// `attachMerged`: the image's lazy layers, bottom first, and where to mount their merged
    /// tree. `warm`: the layers to build ahead.
    public var layers: [LazyLayerSpec]?
    public var mountpoint: String?

    public init(_ operation: Operation, layer: LazyLayerSpec? = nil, layers: [LazyLayerSpec]? = nil, mountpoint: String? = nil) {
        self.operation = operation
        self.layer = layer
        self.layers = layers
        self.mountpoint = mountpoint
    }
}

public struct LayerHostReply: Codable, Sendable {
    public var error: WireError?
    public var layers: [LazyLayerStatus]?

    public init(error: WireError? = nil, layers: [LazyLayerStatus]? = nil) {
        self.error = error
        self.layers = layers
    }
}

// MARK: Control plane

/// `lazypull mount REF DIR` as the CLI hands it to the control plane.
public struct MountRequest: Codable, Sendable {
    public var reference: String
    public var target: String
    public var readOnly = false
    /// Resolve again even when the image is present.
    public var pull = false
    public var platform: String?
    public var plainHTTP = false
    public var insecure = false
    public var fetchTimeoutSeconds = 30
    public var backgroundFetch = true

    public init(reference: String, target: String) {
        self.reference = reference
        self.target = target
    }
}

public struct ControlRequest: Codable, Sendable {
    public enum Operation: String, Codable, Sendable { case mount, umount, status, shutdown }
    public var operation: Operation
    public var mount: MountRequest?
    /// The directory of `umount`, or of `status` (all mounts when nil).
    public var target: String?

    public init(_ operation: Operation, mount: MountRequest? = nil, target: String? = nil) {
        self.operation = operation
        self.mount = mount
        self.target = target
    }
}

/// One message of the control plane's answer: notices first, then one final message
/// (`done`) with the result or the error.
public struct ControlReply: Codable, Sendable {
    public var notice: String?
    public var done = false
    public var error: WireError?
    /// `mount`: the name of the image mounted.
    public var image: String?
    public var status: [MountStatus]?

    public init(notice: String? = nil, done: Bool = false, error: WireError? = nil, image: String? = nil,
                status: [MountStatus]? = nil) {
        self.notice = notice
        self.done = done
        self.error = error
        self.image = image
        self.status = status
    }
}

/// What `lazypull status` reports for one mount, layers top first (as `docker history`).
public struct MountStatus: Codable, Sendable {
    public var target: String
    public var image: String
    public var layers: [LayerStatus]
}

public struct LayerStatus: Codable, Sendable {
    public var digest: String
    /// `estargz`, `zstdchunked`, or the compression of an eagerly pulled layer.
    public var format: String
    /// `lazy` or `eager`.
    public var mode: String
    /// Compressed bytes and Range requests fetched by the running layer host (a whole
    /// eager layer counts as fetched).
    public var fetchedBytes: Int64
    public var fetchRequests: Int
    public var totalBytes: Int64
    /// The background fetch (`off`, `prefetching`, `running`, `paused`, `done`, `failed`),
    /// `not served` for a lazy layer no process serves, `n/a` for eager layers.
    public var background: String
}
