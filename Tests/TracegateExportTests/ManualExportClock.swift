import NIOConcurrencyHelpers
import XCTest

@testable import TracegateExport

/// A clock that moves only when a test advances it; sleepers whose deadline is reached are resumed.
final class ManualExportClock: ExportClock {
    private struct Sleeper {
        let deadline: ContinuousClock.Instant
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now: ContinuousClock.Instant
        var lastSleeper = 0
        var sleepers: [Int: Sleeper] = [:]
    }

    private let state: NIOLockedValueBox<State>
    let start: ContinuousClock.Instant

    init(now: ContinuousClock.Instant = .now) {
        start = now
        state = NIOLockedValueBox(State(now: now))
    }

    var now: ContinuousClock.Instant { state.withLockedValue { $0.now } }
    /// The deadlines tasks sleep until, earliest first.
    var deadlines: [ContinuousClock.Instant] { state.withLockedValue { $0.sleepers.values.map(\.deadline).sorted() } }
    /// Time since the clock was made.
    var elapsed: Duration { now - start }

    func sleep(until deadline: ContinuousClock.Instant) async throws {
        let id = state.withLockedValue { state -> Int in
            state.lastSleeper += 1
            return state.lastSleeper
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLockedValue { state -> Result<Void, any Error>? in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if deadline <= state.now { return .success(()) }
                    state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            state.withLockedValue { $0.sleepers.removeValue(forKey: id) }?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves the time on and resumes the sleepers it reaches.
    func advance(by duration: Duration) {
        let due = state.withLockedValue { state -> [Sleeper] in
            state.now += duration
            let now = state.now
            let due = state.sleepers.filter { $0.value.deadline <= now }
            for id in due.keys { state.sleepers.removeValue(forKey: id) }
            return Array(due.values)
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    /// Waits (in real time, at most `seconds`) until `count` tasks sleep on this clock.
    func waitForSleepers(_ count: Int, seconds: Double = 10, file: StaticString = #filePath, line: UInt = #line) async {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while deadlines.count < count {
            guard ContinuousClock.now < deadline else {
                return XCTFail("\(deadlines.count) tasks sleep, not \(count)", file: file, line: line)
            }
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Once `count` tasks sleep, moves the time to the earliest of their deadlines; returns the step taken.
    @discardableResult
    func advanceToNextDeadline(sleepers count: Int = 1, file: StaticString = #filePath, line: UInt = #line) async -> Duration {
        await waitForSleepers(count, file: file, line: line)
        guard let next = deadlines.first else { return .zero }
        let step = max(.zero, next - now)
        advance(by: step)
        return step
    }
}
