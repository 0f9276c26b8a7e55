import Foundation
import LazyPullOCI

/// One line on stderr (the service's log file or the journal), stamped with the wall-clock
/// time to the millisecond so the control plane's and the layer host's logs interleave. A line
/// that cannot be written (a full disk under the log file) is dropped: logging never traps.
public func serviceLog(_ line: String) {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var parts = tm()
    var seconds = now.tv_sec
    gmtime_r(&seconds, &parts)
    let stamp = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                       parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    writeStandardError("\(stamp) lazypull: \(line)\n")
}
