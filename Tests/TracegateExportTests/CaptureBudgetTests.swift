import NIOConcurrencyHelpers
import XCTest

@testable import TracegateExport

final class CaptureBudgetTests: XCTestCase {
    func testReservationsNeverExceedTheLimitAndReleasedBytesCanBeTakenAgain() {
        let budget = CaptureBudget(limit: 100)
        XCTAssertEqual(budget.reserve(60), 60)
        XCTAssertEqual(budget.reserve(60), 40, "only what is left is granted")
        XCTAssertEqual(budget.reserve(1), 0, "a spent budget grants nothing")
        budget.release(60)
        XCTAssertEqual(budget.inUse, 40)
        XCTAssertEqual(budget.reserve(100), 60)
    }

    func testConcurrentReservationsStayWithinTheLimit() {
        let budget = CaptureBudget(limit: 10_000)
        let total = NIOLockedValueBox(0)
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            var mine = 0
            for _ in 0..<10_000 { mine += budget.reserve(7) }
            total.withLockedValue { $0 += mine }
        }
        XCTAssertEqual(total.withLockedValue { $0 }, 10_000)
        XCTAssertEqual(budget.inUse, 10_000)
    }
}
