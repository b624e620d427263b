import Atomics

/// Hands captured exchanges from event loops to the trace builder. Bounded, and able to say without
/// any lock whether it has room, so an event loop can skip capturing an exchange whose trace would be
/// dropped anyway: once the queue is full, nothing more is captured until the builder takes what is
/// waiting. Every exchange not captured, or captured and dropped, is counted.
///
/// Lock-free: the builder runs at idle priority, and a lock it held when the scheduler set it aside
/// would stall the event loop waiting for it. Offers push onto an atomic stack; `takeBatch` swaps the
/// whole stack out (no element is ever removed alone, so there is no ABA problem).
/// (`@unchecked Sendable`: all its state is in atomics; a node is owned by whoever swapped it out.)
public final class CaptureQueue<Element: Sendable>: @unchecked Sendable {
    fileprivate final class Node: LoopReturns.Node {
        let element: Element
        /// Where the node goes once its element has been used (`Batch.sendHome`); nil: freed there.
        let home: LoopReturns?
        var next: Unmanaged<Node>?
        init(_ element: Element, home: LoopReturns?) {
            self.element = element
            self.home = home
        }
    }

    public let capacity: Int
    /// The newest element; each node links to the one offered before it.
    private let top = ManagedAtomic<Unmanaged<Node>?>(nil)
    /// Elements offered and not yet taken (a slot is reserved before its node is pushed).
    private let waiting = ManagedAtomic(0)
    private let open = ManagedAtomic(true)
    private let paused = ManagedAtomic(false)
    private let refused = ManagedAtomic(0)
    /// Notified after each offer: wakes the consumer when it waits for work.
    private let signal: ThreadWakeSignal?

    public init(capacity: Int, signal: ThreadWakeSignal? = nil) {
        precondition(capacity > 0, "a capture queue needs room for at least one element")
        self.capacity = capacity
        self.signal = signal
    }

    deinit {
        var node = top.exchange(nil, ordering: .acquiring)
        while let current = node {
            node = current.takeUnretainedValue().next
            current.release()
        }
    }

    /// Whether a new exchange should be captured: false from the moment the queue fills until the next
    /// `takeBatch()`, and while paused. Relaxed: a stale answer only means one exchange more or less is captured.
    public var isAccepting: Bool { open.load(ordering: .relaxed) && !paused.load(ordering: .relaxed) }

    /// Stops (or resumes) capturing whatever the queue holds, e.g. while the traces cannot be delivered.
    public func setPaused(_ pause: Bool) { paused.store(pause, ordering: .relaxed) }

    /// Counts an exchange left uncaptured because `isAccepting` was false.
    public func refuse() { refused.wrappingIncrement(ordering: .relaxed) }

    /// Exchanges refused or dropped so far.
    public var refusedCount: Int { refused.load(ordering: .relaxed) }

    /// Elements waiting for `takeBatch()`.
    public var count: Int { waiting.load(ordering: .relaxed) }

    /// Queues `element`; false (and counted) when the queue is full.
    /// With a `home`, what the element holds is freed by whoever releases `home` (`takeBatch`).
    @discardableResult
    public func offer(_ element: Element, home: LoopReturns? = nil) -> Bool {
        var reserved = waiting.load(ordering: .relaxed)
        while true {
            guard reserved < capacity else {
                open.store(false, ordering: .relaxed)
                refuse()
                return false
            }
            let (exchanged, original) = waiting.weakCompareExchange(
                expected: reserved, desired: reserved + 1, ordering: .relaxed)
            if exchanged { break }
            reserved = original
        }
        if reserved + 1 == capacity { open.store(false, ordering: .relaxed) }
        let node = Unmanaged.passRetained(Node(element, home: home))
        var current = top.load(ordering: .relaxed)
        while true {
            node.takeUnretainedValue().next = current
            let (exchanged, original) = top.weakCompareExchange(
                expected: current, desired: node, successOrdering: .releasing, failureOrdering: .relaxed)
            if exchanged {
                signal?.notify()
                return true
            }
            current = original
        }
    }

    /// Everything waiting, oldest first, still in its nodes; the queue accepts again. The consumer reads
    /// `elements`, lets go of every copy it made, then calls `sendHome()`: each node goes back to the
    /// `home` it was offered with, so the memory its producer allocated is freed by that producer.
    public func takeBatch() -> Batch {
        var node = top.exchange(nil, ordering: .acquiring)
        var nodes: [Unmanaged<Node>] = []
        while let current = node {
            nodes.append(current)
            node = current.takeUnretainedValue().next
        }
        if !nodes.isEmpty { waiting.wrappingDecrement(by: nodes.count, ordering: .relaxed) }
        open.store(true, ordering: .relaxed)
        nodes.reverse()
        return Batch(nodes: nodes)
    }

    /// Elements taken by `takeBatch()`, held by their nodes until `sendHome()`.
    public struct Batch: ~Copyable {
        fileprivate let nodes: [Unmanaged<Node>]

        /// The elements, oldest first: copies, to be let go of before `sendHome()`.
        public var elements: [Element] { nodes.map { $0.takeUnretainedValue().element } }

        /// Returns each node to its home, or releases it here if it has none (as the batch does whenever
        /// it ends: this names the point).
        public consuming func sendHome() {}

        deinit {
            for node in nodes {
                if let home = node.takeUnretainedValue().home {
                    home.push(Unmanaged.passUnretained(node.takeUnretainedValue() as LoopReturns.Node))  // its +1 goes with it
                } else {
                    node.release()
                }
            }
        }
    }

    /// Everything waiting, oldest first; the queue accepts again. (Each node then goes home, or is
    /// freed here, as with `takeBatch()`.)
    public func takeAll() -> [Element] { takeBatch().elements }
}
