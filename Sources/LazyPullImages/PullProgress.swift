import Foundation
import LazyPullOCI
import Synchronization

/// Per-layer progress of a pull. On a terminal it redraws one bar per layer on stderr
/// (bytes, total, rate); otherwise it stays silent.
public final class PullProgress: Sendable {
    struct Layer {
        var name: String
        var total: Int64
        var done: Int64 = 0
        var state = "waiting"
        /// When the layer finished (or failed): its rate stops changing then.
        var ended: ContinuousClock.Instant?
    }
    private struct State { var layers: [Layer] = []; var drawnLines = 0; var stopped = false }

    private let state = Mutex(State())
    private let enabled: Bool
    private let start = ContinuousClock.now

    public init(enabled: Bool) { self.enabled = enabled }

    /// Whether stderr is a terminal and output was not silenced.
    public static func wanted(quiet: Bool) -> Bool { !quiet && isatty(STDERR_FILENO) == 1 }

    public func addLayer(name: String, total: Int64) -> Int {
        state.withLock { s in
            s.layers.append(Layer(name: name, total: total))
            return s.layers.count - 1
        }
    }

    public func advance(_ layer: Int, by bytes: Int) {
        state.withLock { $0.layers[layer].done += Int64(bytes) }
    }

    public func set(_ layer: Int, state text: String, done: Int64? = nil) {
        state.withLock { s in
            s.layers[layer].state = text
            if let done { s.layers[layer].done = done }
            if text == "done" || text == "failed" || text == "exists" { s.layers[layer].ended = .now }
        }
    }

    /// Starts redrawing every 150 ms until ``stop()``.
    public func run() {
        guard enabled else { return }
        let thread = Thread { [self] in
            while !state.withLock({ $0.stopped }) {
                draw()
                Thread.sleep(forTimeInterval: 0.15)
            }
        }
        thread.start()
    }

    public func stop() {
        guard enabled else { return }
        state.withLock { $0.stopped = true }
        draw()
    }

    private func draw() {
        var text = ""
        state.withLock { s in
            if s.drawnLines > 0 { text += "\u{1B}[\(s.drawnLines)A" }
            for layer in s.layers {
                let fraction = layer.total > 0 ? min(1, Double(layer.done) / Double(layer.total)) : 1
                let width = 24
                let filled = Int(fraction * Double(width))
                let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
                let elapsed = (layer.ended ?? .now) - start
                let seconds = max(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, 0.001)
                let rate = Double(layer.done) / seconds
                text += "\u{1B}[2K\(layer.name)  \(layer.state.padding(toLength: 11, withPad: " ", startingAt: 0)) [\(bar)] "
                    + "\(ByteCount.format(layer.done))/\(ByteCount.format(layer.total))  \(ByteCount.format(Int64(rate)))/s\n"
            }
            s.drawnLines = s.layers.count
        }
        writeStandardError(text)
    }
}

/// Byte counts for people: decimal units, one decimal place.
public enum ByteCount {
    public static func format(_ n: Int64) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var v = Double(n)
        var i = 0
        while v >= 1000 && i < units.count - 1 { v /= 1000; i += 1 }
        return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
    }
}
