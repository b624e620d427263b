/// The exporter's time: when it is, and sleeping until a deadline. `ContinuousExportClock` is the
/// real one; tests drive a manual one.
public protocol ExportClock: Sendable {
    var now: ContinuousClock.Instant { get }
    /// Returns at `deadline`, or throws `CancellationError` when the task is cancelled first.
    func sleep(until deadline: ContinuousClock.Instant) async throws
}

extension ExportClock {
    func sleep(for duration: Duration) async throws { try await sleep(until: now + duration) }
}

/// `ContinuousClock`: monotonic, and it keeps counting while the machine sleeps.
public struct ContinuousExportClock: ExportClock {
    public init() {}
    public var now: ContinuousClock.Instant { .now }
    public func sleep(until deadline: ContinuousClock.Instant) async throws {
        try await ContinuousClock().sleep(until: deadline, tolerance: nil)
    }
}
