import Foundation

/// When and how long to wait before trying a request again: exponential backoff with full
/// jitter, `Retry-After` honoured, and a hard bound on attempts and on total time.
///
/// **The deadline bound.** With ``deadline`` set to D, one registry request (every attempt,
/// the token fetches and redirects inside them, and the waits between them) returns or
/// throws within D plus scheduling slack, at most D + 10 % (and never more than D + 1 s):
/// each transfer gets `CURLOPT_TIMEOUT_MS` = the time left, a wait is cut to the time left,
/// and no attempt starts with less than ``minimumAttempt`` left. Whatever the server does
/// (refuse, accept and hang, drip a 206 at 2 bytes/s) the request fails with a timeout
/// within that bound. Lazy reads use D = `--fetch-timeout` (``forFetchTimeout(_:)``).
///
/// Without a deadline, fetches collected in memory (manifests, configs, TOC ranges, tails,
/// tokens) still end within `RegistryOptions.documentDeadline` (10 minutes), and streamed
/// layer downloads of any size (eager pulls) are bounded per attempt by the rate floor of
/// ``HTTPOptions`` (at least ``HTTPOptions/minimumRate`` bytes/s over
/// ``HTTPOptions/stallTimeout``), with no retry started after ``budget``: no fetch can hang.
public struct RetryPolicy: Sendable {
    public var maxAttempts: Int
    public var baseDelay: Duration
    public var maxDelay: Duration
    /// No retry starts once this much time has passed since the first attempt.
    public var budget: Duration
    /// When set, the whole request ends within this (see the type's documentation).
    public var deadline: Duration?

    /// An attempt is not started with less than this left before the ``deadline``: it could
    /// not finish, and the time is better spent failing promptly.
    public static let minimumAttempt: Duration = .milliseconds(50)

    public init(maxAttempts: Int = 6, baseDelay: Duration = .milliseconds(200),
                maxDelay: Duration = .seconds(8), budget: Duration = .seconds(60), deadline: Duration? = nil) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.budget = budget
        self.deadline = deadline
    }

    /// The policy of lazy reads with `--fetch-timeout T`: retries (short backoff, up to 2 s
    /// apart) for as long as T allows, and every read's request over within T (+10 %).
    public static func forFetchTimeout(_ timeout: Duration) -> RetryPolicy {
        RetryPolicy(maxAttempts: 100, baseDelay: .milliseconds(200), maxDelay: .seconds(2),
                    budget: timeout, deadline: timeout)
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
        // Digits only (no sign), capped at a day: the caller cuts it to its budget anyway.
        if !trimmed.isEmpty, trimmed.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            return .seconds(trimmed.utf8.count > 5 ? 86_400 : min(Int(trimmed) ?? 86_400, 86_400))
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: trimmed) else { return nil }
        return .milliseconds(Int(min(max(0, date.timeIntervalSinceNow), 86_400) * 1000))
    }
}
