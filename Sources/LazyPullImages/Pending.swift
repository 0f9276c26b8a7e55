import Foundation
import Synchronization

/// Work started on another thread; waiters block until its outcome is there. A failure is
/// tried again by the next caller that needs it.
public final class Pending<Value: Sendable>: Sendable {
    private let result = Mutex<Result<Value, any Error>?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    public var failed: Bool { result.withLock { if case .failure? = $0 { true } else { false } } }

    public init() {}

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
