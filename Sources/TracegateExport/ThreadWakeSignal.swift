import Atomics
import NIOConcurrencyHelpers

/// Wakes one consumer thread when producers hand it work, and costs producers no system call while the
/// consumer is busy: `notify()` is a fence and a load unless the consumer is blocked in `wait`.
///
/// A producer publishes its work (a `CaptureQueue` offer) before `notify()`; the consumer announces it
/// is about to block before it looks for work one last time. The two sequentially consistent fences
/// order those steps, so either the consumer sees the work or the producer sees the consumer waiting:
/// a wake-up is never lost. A wake-up can be spurious (the consumer then finds nothing and waits again).
/// (Tasks waiting for work use `WakeSignal` instead: it suspends them rather than blocking a thread.)
public final class ThreadWakeSignal: Sendable {
    private let consumerWaiting = ManagedAtomic(false)
    /// 1 once work was signalled and the consumer has not yet woken for it.
    private let signalled = ConditionLock(value: 0)

    public init() {}

    /// Called by a producer after it published work.
    public func notify() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        guard consumerWaiting.load(ordering: .relaxed) else { return }
        wake()
    }

    /// Wakes the consumer whether or not it waits (e.g. to stop it); its next `wait` returns at once.
    public func wake() {
        signalled.lock()
        signalled.unlock(withValue: 1)
    }

    /// Blocks the consumer until `notify()` or `wake()` (or `timeout`, when given), unless `hasWork()`,
    /// asked after announcing the wait, says there is work already.
    public func wait(timeout: Duration? = nil, unless hasWork: () -> Bool) {
        consumerWaiting.store(true, ordering: .relaxed)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if !hasWork() {
            if let timeout {
                let (seconds, attoseconds) = timeout.components
                if signalled.lock(whenValue: 1, timeoutSeconds: Double(seconds) + Double(attoseconds) / 1e18) {
                    signalled.unlock(withValue: 0)
                }
            } else {
                signalled.lock(whenValue: 1)
                signalled.unlock(withValue: 0)
            }
        }
        consumerWaiting.store(false, ordering: .relaxed)
    }
}
