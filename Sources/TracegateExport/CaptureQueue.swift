import Atomics
import NIOConcurrencyHelpers

/// Hands captured exchanges from event loops to the trace builder. Bounded, and able to say without
/// taking its lock whether it has room, so an event loop can skip capturing an exchange whose trace
/// would be dropped anyway: once the queue is full, nothing more is captured until the builder takes
/// what is waiting. Every exchange not captured, or captured and dropped, is counted.
public final class CaptureQueue<Element: Sendable>: Sendable {
    public let capacity: Int
    private let items: NIOLockedValueBox<[Element]>
    private let open = ManagedAtomic(true)
    private let paused = ManagedAtomic(false)
    private let refused = ManagedAtomic(0)

    public init(capacity: Int) {
        precondition(capacity > 0, "a capture queue needs room for at least one element")
        self.capacity = capacity
        items = NIOLockedValueBox([])
    }

    /// Whether a new exchange should be captured: false from the moment the queue fills until the next
    /// `takeAll()`, and while paused. Relaxed: a stale answer only means one exchange more or less is captured.
    public var isAccepting: Bool { open.load(ordering: .relaxed) && !paused.load(ordering: .relaxed) }

    /// Stops (or resumes) capturing whatever the queue holds, e.g. while the traces cannot be delivered.
    public func setPaused(_ pause: Bool) { paused.store(pause, ordering: .relaxed) }

    /// Counts an exchange left uncaptured because `isAccepting` was false.
    public func refuse() { refused.wrappingIncrement(ordering: .relaxed) }

    /// Exchanges refused or dropped so far.
    public var refusedCount: Int { refused.load(ordering: .relaxed) }

    /// Elements waiting for `takeAll()`.
    public var count: Int { items.withLockedValue { $0.count } }

    /// Queues `element`; false (and counted) when the queue is full.
    @discardableResult
    public func offer(_ element: Element) -> Bool {
        let accepted = items.withLockedValue { items -> Bool in
            guard items.count < capacity else { return false }
            items.append(element)
            if items.count == capacity { open.store(false, ordering: .relaxed) }
            return true
        }
        if !accepted { refuse() }
        return accepted
    }

    /// Everything waiting, oldest first; the queue accepts again.
    public func takeAll() -> [Element] {
        var taken: [Element] = []
        items.withLockedValue { items in
            swap(&taken, &items)
            open.store(true, ordering: .relaxed)
        }
        return taken
    }
}
