import Atomics

/// Bytes of request and response bodies that exchanges still in flight may hold for their traces,
/// shared by all of them. Each body keeps at most `capture_max_body_bytes`; this bounds the sum, so
/// thousands of slow exchanges cannot each hold a full capture: once it is spent, further body bytes
/// are counted but not kept (the trace marks the body truncated) until finished exchanges give theirs back.
public final class CaptureBudget: Sendable {
    public let limit: Int
    private let held = ManagedAtomic(0)

    public init(limit: Int) { self.limit = limit }

    /// Takes up to `wanted` bytes of the budget; returns how many were granted (0 when it is spent).
    public func reserve(_ wanted: Int) -> Int {
        guard wanted > 0 else { return 0 }
        var current = held.load(ordering: .relaxed)
        while true {
            let granted = min(wanted, limit - current)
            guard granted > 0 else { return 0 }
            let (exchanged, original) = held.compareExchange(
                expected: current, desired: current + granted, ordering: .relaxed)
            if exchanged { return granted }
            current = original
        }
    }

    /// Takes `bytes` whether or not they fit: storage that was allocated beyond what was reserved.
    public func charge(_ bytes: Int) {
        held.wrappingIncrement(by: bytes, ordering: .relaxed)
    }

    /// Gives back bytes taken with `reserve` or `charge`.
    public func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        held.wrappingDecrement(by: bytes, ordering: .relaxed)
    }

    /// Bytes held now.
    public var inUse: Int { held.load(ordering: .relaxed) }
}
