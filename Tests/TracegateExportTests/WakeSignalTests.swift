import NIOConcurrencyHelpers
import XCTest

@testable import TracegateExport

final class WakeSignalTests: XCTestCase {
    func testASignalAfterTheMarkEndsTheWaitAtOnce() async {
        let wake = WakeSignal()
        let clock = ManualExportClock()
        let mark = wake.mark()
        wake.signal()  // before anyone waits: not lost
        await wake.wait(since: mark, until: nil, clock: clock)
        await wake.wait(since: mark, until: clock.now + .seconds(60), clock: clock)
        XCTAssertEqual(clock.elapsed, .zero)
    }

    func testEveryWaiterWakesOnOneSignal() async {
        let wake = WakeSignal()
        let clock = ManualExportClock()
        let mark = wake.mark()
        let woken = NIOLockedValueBox(0)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    await wake.wait(since: mark, until: nil, clock: clock)
                    woken.withLockedValue { $0 += 1 }
                }
            }
            try? await Task.sleep(for: .milliseconds(20))
            XCTAssertEqual(woken.withLockedValue { $0 }, 0, "no signal yet")
            wake.signal()
        }
        XCTAssertEqual(woken.withLockedValue { $0 }, 3)
    }

    func testAWaitEndsAtItsDeadline() async {
        let wake = WakeSignal()
        let clock = ManualExportClock()
        let waiter = Task { await wake.wait(since: wake.mark(), until: clock.start + .seconds(2), clock: clock) }
        await clock.waitForSleepers(1)
        XCTAssertEqual(clock.deadlines, [clock.start + .seconds(2)])
        clock.advance(by: .seconds(2))
        await waiter.value
        XCTAssertEqual(clock.deadlines, [])
    }

    func testASignalEndsAWaitBeforeItsDeadlineAndCancelsTheSleep() async {
        let wake = WakeSignal()
        let clock = ManualExportClock()
        let waiter = Task { await wake.wait(since: wake.mark(), until: clock.start + .seconds(2), clock: clock) }
        await clock.waitForSleepers(1)
        wake.signal()
        await waiter.value
        XCTAssertEqual(clock.deadlines, [], "the sleep on the clock is given up")
        XCTAssertEqual(clock.elapsed, .zero)
    }

    func testCancellationEndsAWait() async {
        let wake = WakeSignal()
        let clock = ManualExportClock()
        let mark = wake.mark()
        let forever = Task { await wake.wait(since: mark, until: nil, clock: clock) }
        let withDeadline = Task { await wake.wait(since: mark, until: clock.start + .seconds(2), clock: clock) }
        await clock.waitForSleepers(1)
        forever.cancel()
        withDeadline.cancel()
        await forever.value
        await withDeadline.value
        XCTAssertEqual(clock.deadlines, [])
    }
}
