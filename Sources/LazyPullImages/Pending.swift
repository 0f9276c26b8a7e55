import Foundation
import Synchronization

/// Work started on another thread; waiters block until its outcome is there. A failure is
/// tried again by the next caller that needs it.
public final class Pending<Value: Sendable>: Sendable {
    private let result = Mutex<Result<Value, any Error>?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    public var failed: Bool { result.withLock { if case .failure? = $0 { true } else { false } } }

    public init() {}

    /// Runs `work` on a thread of its own and returns its pending outcome.
    public static func start(_ work: @escaping @Sendable () throws -> Value) -> Pending<Value> {
        let pending = Pending<Value>()
        pending.start(work)
        return pending
    }

    /// Runs `work` on a thread of its own, finishing with its outcome. A thread, not a
    /// dispatch queue: the work blocks on the network, and libdispatch sizes its pool by
    /// the number of CPUs (two here), adding threads for blocked ones only after a delay
    /// that showed up as 150 ms stalls in a container's start.
    public func start(_ work: @escaping @Sendable () throws -> Value) {
        BlockingThread.run { self.finish(Result { try work() }) }
    }

    public func finish(_ outcome: Result<Value, any Error>) {
        result.withLock { $0 = outcome }
        ready.signal()
    }

    public func wait() throws -> Value {
        ready.wait()
        ready.signal()
        return try result.withLock { $0! }.get()
    }
}

/// Threads for work that blocks (network, disk): see ``Pending/start(_:)``.
public enum BlockingThread {
    public static func run(_ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.stackSize = 1 << 20
        thread.start()
    }
}
