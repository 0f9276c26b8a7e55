import Foundation
import LazyPullOCI

/// A pull-based source of bytes. `read` returns 0 only at the end of the stream.
public protocol ByteSource: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

extension ByteSource {
    /// Reads until `buffer` is full; returns fewer bytes only at the end of the stream.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var filled = 0
        while filled < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]))
            if n == 0 { break }
            filled += n
        }
        return filled
    }

    /// Reads and discards everything up to the end of the stream; returns the byte count.
    @discardableResult
    public func drain() throws -> Int64 {
        var total: Int64 = 0
        var scratch = [UInt8](repeating: 0, count: 256 * 1024)
        while true {
            let n = try scratch.withUnsafeMutableBytes { try read(into: $0) }
            if n == 0 { return total }
            total += Int64(n)
        }
    }
}

/// A bounded, thread-safe byte queue between a producer (a download) and a consumer (an
/// unpacker) on another thread. Either side can fail the pipe; the other then sees the error.
public final class BytePipe: ByteSource, @unchecked Sendable {
    private let condition = NSCondition()
    private var chunks: [[UInt8]] = []
    private var head: [UInt8] = []
    private var headOffset = 0
    private var queuedBytes = 0
    private var finished = false
    private var failure: Error?
    private let capacity: Int

    public init(capacity: Int = 8 << 20) { self.capacity = capacity }

    /// Producer: blocks while the pipe is full. Throws if the consumer failed.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        condition.lock()
        defer { condition.unlock() }
        while queuedBytes >= capacity && failure == nil { condition.wait() }
        if let failure { throw failure }
        chunks.append(Array(bytes))
        queuedBytes += bytes.count
        condition.broadcast()
    }

    /// Producer: no more bytes.
    public func finish() {
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// Either side: stops the pipe with `error` (the first error wins).
    public func fail(_ error: Error) {
        condition.lock()
        if failure == nil { failure = error }
        condition.broadcast()
        condition.unlock()
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if headOffset < head.count { return takeFromHead(into: buffer) }
        condition.lock()
        while chunks.isEmpty && !finished && failure == nil { condition.wait() }
        if let failure { condition.unlock(); throw failure }
        if chunks.isEmpty { condition.unlock(); return 0 }
        head = chunks.removeFirst()
        headOffset = 0
        queuedBytes -= head.count
        condition.broadcast()
        condition.unlock()
        return takeFromHead(into: buffer)
    }

    private func takeFromHead(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(buffer.count, head.count - headOffset)
        head.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + headOffset, byteCount: n)
        }
        headOffset += n
        return n
    }
}

/// Passes bytes through while hashing them with SHA-256 (the layer's diff ID).
public final class HashingSource: ByteSource {
    private let source: ByteSource
    private let hasher = SHA256Hasher()
    public private(set) var count: Int64 = 0

    public init(_ source: ByteSource) { self.source = source }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try source.read(into: buffer)
        hasher.update(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
        count += Int64(n)
        return n
    }

    /// The digest of everything read so far.
    public func digest() -> Digest { hasher.finalize() }
}

/// Reads a file descriptor it does not own.
public final class FileDescriptorSource: ByteSource {
    private let fd: Int32
    public init(fd: Int32) { self.fd = fd }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno != EINTR { throw LazyPullError(.io, "read failed: \(String(cString: strerror(errno)))") }
        }
    }
}

/// Reads `upstream` on a thread of its own, so decoding overlaps with whoever consumes
/// the bytes (an unpacker writing files). Errors travel to the consumer; ``fail(_:)``
/// stops the thread when the consumer gives up.
public final class ThreadedSource: ByteSource, @unchecked Sendable {
    private let pipe: BytePipe

    public init(_ upstream: ByteSource, chunkSize: Int = 1 << 20, capacity: Int = 16 << 20) {
        let pipe = BytePipe(capacity: capacity)
        self.pipe = pipe
        let box = UncheckedBox(upstream)
        let thread = Thread {
            var buffer = [UInt8](repeating: 0, count: chunkSize)
            do {
                while true {
                    let n = try buffer.withUnsafeMutableBytes { try box.value.read(into: $0) }
                    if n == 0 { break }
                    try buffer.withUnsafeBytes { try pipe.write(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
                }
                pipe.finish()
            } catch {
                pipe.fail(error)
            }
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try pipe.read(into: buffer)
    }

    public func fail(_ error: Error) { pipe.fail(error) }
}

/// Hands a non-Sendable value to exactly one other thread.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Bytes already in memory.
public final class MemorySource: ByteSource {
    private let bytes: [UInt8]
    private var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, bytes.count - offset)
        if n > 0 {
            bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
            offset += n
        }
        return n
    }
}
