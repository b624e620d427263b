import Atomics

/// Memory an event loop allocated and a background thread is done with, on its way back to be freed by
/// that loop.
///
/// glibc gives each event loop a malloc arena of its own, and freeing a block takes the lock of the arena
/// it came from. When the idle-priority trace builder freed what a loop had captured, it held that loop's
/// arena lock for each free; preempted in the middle (which at idle priority can last until a CPU falls
/// idle), it kept the loop waiting: 19–28 ms waits on the arena lock at `wrk -c32` with capture on. So
/// the builder frees nothing a loop allocated: it pushes the queue node that carried it (allocated by the
/// loop, so the push allocates nothing) here, and the loop lets go of it at its next exchange or
/// WebSocket turn, or within a second.
///
/// Lock-free like `CaptureQueue`: pushes go onto an atomic stack, `releaseAll` swaps the whole stack out.
/// (`@unchecked Sendable`: all its state is in atomics; a node is owned by whoever swapped it out.)
public final class LoopReturns: @unchecked Sendable {
    /// A node that can travel back to its loop: the link is its own, so returning allocates nothing.
    open class Node {
        fileprivate var nextReturn: Unmanaged<Node>?
        public init() {}
    }

    private let top = ManagedAtomic<Unmanaged<Node>?>(nil)
    private let waiting = ManagedAtomic(0)
    /// Set by `close()`: nodes pushed later are released by the pusher, as no loop will take them.
    private let closed = ManagedAtomic(false)

    public init() {}

    /// Nodes returned and not yet released.
    public var count: Int { waiting.load(ordering: .relaxed) }

    /// Hands `node` (and the +1 reference it carries) back; any thread.
    public func push(_ node: Unmanaged<Node>) {
        if closed.load(ordering: .sequentiallyConsistent) {
            node.release()
            return
        }
        waiting.wrappingIncrement(ordering: .relaxed)
        var current = top.load(ordering: .relaxed)
        while true {
            node.takeUnretainedValue().nextReturn = current
            let (exchanged, original) = top.weakCompareExchange(
                expected: current, desired: node, successOrdering: .releasing, failureOrdering: .relaxed)
            if exchanged { break }
            current = original
        }
        // A `close()` that ran between the check above and the push would leave the node here for good.
        if closed.load(ordering: .sequentiallyConsistent) { releaseAll() }
    }

    /// Its loop is going away: releases what is waiting, and from now on a push releases its node at once
    /// (a node holds its home, so without this the two would keep each other alive).
    public func close() {
        closed.store(true, ordering: .sequentiallyConsistent)
        releaseAll()
    }

    /// Releases every node returned so far: called by the loop that allocated them. One atomic load when
    /// there are none.
    public func releaseAll() {
        guard top.load(ordering: .relaxed) != nil else { return }
        var node = top.exchange(nil, ordering: .acquiring)
        var released = 0
        while let current = node {
            node = current.takeUnretainedValue().nextReturn
            current.release()
            released += 1
        }
        waiting.wrappingDecrement(by: released, ordering: .relaxed)
    }
}
