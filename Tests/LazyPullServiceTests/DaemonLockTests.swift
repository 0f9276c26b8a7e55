import Foundation
import Testing
@testable import LazyPullService

/// How a client decides whether to start a control plane or layer host: only when nobody
/// answers and nobody holds the root's lock (issue 13: one control plane per root).
struct DaemonLockTests {
    @Test("a lock file nobody holds, or none at all, is free; one held by an open file description is held")
    func probe() throws {
        let dir = NSTemporaryDirectory() + "lazypull-lock-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/control.lock"
        #expect(!Daemon.isHeld(path))
        #expect(!FileManager.default.fileExists(atPath: path), "probing must not create the lock file")

        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(!Daemon.isHeld(path))
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        #expect(Daemon.isHeld(path))
        // Probing let nothing go and took nothing.
        #expect(Daemon.isHeld(path))
        #expect(flock(fd, LOCK_UN) == 0)
        #expect(!Daemon.isHeld(path))
    }
}
