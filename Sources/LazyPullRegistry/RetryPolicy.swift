import Foundation

/// When and how long to wait before trying a request again: exponential backoff with full
/// jitter, `Retry-After` honoured, and a hard bound on attempts and on total time.
public struct RetryPolicy: Sendable {
    public var maxAttempts: Int
    public var baseDelay: Duration
    public var maxDelay: Duration
    /// No retry starts once this much time has passed since the first attempt.
    public var budget: Duration

    public init(maxAttempts: Int = 6, baseDelay: Duration = .milliseconds(200),
                maxDelay: Duration = .seconds(8), budget: Duration = .seconds(60)) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.budget = budget
    }

    /// Retryable: transport errors, 408, 429 and 5xx except 501 (not implemented is final).
    public static func isRetryable(status: Int) -> Bool {
        status == 408 || status == 429 || (status >= 500 && status != 501)
    }

    /// The delay before attempt `attempt + 1` (attempt counts from 1), or nil to give up.
    public func delay(afterAttempt attempt: Int, retryAfter: String?, elapsed: Duration) -> Duration? {
        guard attempt < maxAttempts, elapsed < budget else { return nil }
        if let retryAfter, let seconds = Self.parseRetryAfter(retryAfter) {
            let wait = min(seconds, budget - elapsed)
            return wait > .zero ? wait : nil
        }
        let exponential = baseDelay * (1 << min(attempt - 1, 20))
        let capped = min(exponential, maxDelay)
        let millis = Double(capped.components.seconds) * 1000 + Double(capped.components.attoseconds) / 1e15
        // Full jitter, but never less than half the step, so retries do not pile up.
        return .milliseconds(Int(millis / 2 + Double.random(in: 0...(millis / 2))))
    }

    /// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3).
    static func parseRetryAfter(_ value: String) -> Duration? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Int(trimmed), seconds >= 0 { return .seconds(seconds) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: trimmed) else { return nil }
        return .milliseconds(max(0, Int(date.timeIntervalSinceNow * 1000)))
    }
}
