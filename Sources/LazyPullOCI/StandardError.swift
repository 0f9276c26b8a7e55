#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes `text` to standard error with write(2), as much as the descriptor takes.
///
/// A log line must never stop a process: `FileHandle.standardError.write` traps when the
/// write fails (a full disk under the log file), so every program of lazypull logs through
/// this instead. Failures other than EINTR are ignored.
public func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + done, $0.count - done) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return }
        done += n
    }
    bytes.removeAll()
}
