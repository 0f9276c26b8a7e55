import Foundation
import LazyPullOCI

/// The names of a lazy layer's cache files: `<directory>/<algorithm>/<layer hex>.<toc hex>.data`
/// and `.map`, by the layer's blob digest and the sha256 of the verified TOC JSON it is
/// served from. The layout of the data file and every chunk digest its bytes were checked
/// against come from that one TOC: an image that names another image's layer digest with a
/// TOC of its own gets files of its own, and two images that share a layer (same blob, same
/// TOC) share its cache. Everything before the first `.` of a name is the layer's hex.
public enum LayerCacheFiles {
    /// `<layer hex>.<toc hex>`: the data file is this plus `.data`, the map plus `.map`.
    public static func baseName(layer: Digest, toc: Digest) -> String { "\(layer.encoded).\(toc.encoded)" }

    /// The data file of `layer` served from `toc`, under `cacheDirectory`.
    public static func dataPath(cacheDirectory: String, layer: Digest, toc: Digest) -> String {
        "\(cacheDirectory)/\(layer.algorithm)/\(baseName(layer: layer, toc: toc)).data"
    }

    /// The data file of `layer` served from the TOC JSON at `tocPath` (hashed here), nil when
    /// that file cannot be read.
    public static func dataPath(cacheDirectory: String, layer: Digest, tocPath: String) -> String? {
        guard let json = FileManager.default.contents(atPath: tocPath) else { return nil }
        return dataPath(cacheDirectory: cacheDirectory, layer: layer, toc: Digest.sha256(of: json))
    }

    /// The layer hex a cache file's name starts with.
    public static func layerHex(ofFile name: String) -> String { String(name.prefix { $0 != "." }) }
}
