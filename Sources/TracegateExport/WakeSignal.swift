import NIOConcurrencyHelpers

/// Wakes tasks waiting for work. A waiter takes a `Mark` before it looks at whatever decides that it
/// waits; a `signal()` after the mark ends the wait at once, so a signal between the look and the
/// wait is not lost, whichever of several waiters it was meant for. `signal()` with nobody waiting
/// costs one lock.
final class WakeSignal: Sendable {
    struct Mark: Sendable {
        fileprivate let generation: UInt64
    }

    private struct State {
        var generation: UInt64 = 0
        var lastWaiter = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = NIOLockedValueBox(State())

    init() {}

    func mark() -> Mark { Mark(generation: state.withLockedValue { $0.generation }) }

    /// Wakes every waiter, and every wait yet to start from an earlier mark.
    func signal() {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.generation &+= 1
            guard !state.waiters.isEmpty else { return [] }
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns on a signal since `mark`, at `deadline` on `clock` (nil: no deadline), or once the
    /// task is cancelled.
    func wait(since mark: Mark, until deadline: ContinuousClock.Instant?, clock: some ExportClock) async {
        guard let deadline else { return await waitForSignal(since: mark) }
        guard clock.now < deadline else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForSignal(since: mark) }
            group.addTask { try? await clock.sleep(until: deadline) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForSignal(since mark: Mark) async {
        let id = state.withLockedValue { state -> Int in
            state.lastWaiter += 1
            return state.lastWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // Under the lock: a signal or a cancellation either came before (resume now) or will find the waiter.
                let resumeNow = state.withLockedValue { state -> Bool in
                    guard state.generation == mark.generation, !Task.isCancelled else { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
