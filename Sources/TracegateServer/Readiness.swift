import NIOConcurrencyHelpers

/// Readiness as the admin endpoints report it; true from the moment the listener serves (`ProxyService`) until it starts draining.
public final class Readiness: Sendable {
    private let ready = NIOLockedValueBox(false)
    public init() {}
    public var isReady: Bool { ready.withLockedValue { $0 } }
    public func set(_ value: Bool) { ready.withLockedValue { $0 = value } }
}
