import NIOConcurrencyHelpers

/// Counts occurrences of one recurring problem and says when to log it: the first time, then at most
/// once per `interval`, with the running total, so a flood of failures cannot flood the log.
public final class LogThrottle: Sendable {
    private let interval: Duration
    private let state = NIOLockedValueBox((count: 0, lastLog: ContinuousClock.Instant?.none))

    public init(interval: Duration = .seconds(10)) { self.interval = interval }

    /// Adds `occurrences`; returns the total so far when it is time to log, nil otherwise.
    public func record(_ occurrences: Int = 1) -> Int? {
        state.withLockedValue { state in
            state.count += occurrences
            if let last = state.lastLog, ContinuousClock.now - last < interval { return nil }
            state.lastLog = .now
            return state.count
        }
    }
}
