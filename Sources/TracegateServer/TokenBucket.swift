/// A rate limit: `rate` per second on average, bursts up to `burst`.
struct TokenBucket: Sendable {
    let rate: Double
    let burst: Double
    private var tokens: Double
    private var updatedAt: UInt64

    init(rate: Double, burst: Double, nowNanos: UInt64) {
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updatedAt = nowNanos
    }

    /// Takes one token if there is one.
    mutating func take(nowNanos: UInt64) -> Bool {
        if nowNanos > updatedAt {
            tokens = min(burst, tokens + Double(nowNanos - updatedAt) / 1e9 * rate)
            updatedAt = nowNanos
        }
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
