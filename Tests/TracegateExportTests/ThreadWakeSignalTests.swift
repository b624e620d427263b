import Foundation
import NIOConcurrencyHelpers
import XCTest

@testable import TracegateExport

final class ThreadWakeSignalTests: XCTestCase {
    /// Ping-pong: the producer offers one element, then waits until the consumer has taken it; the
    /// consumer waits for work before each take. Every wake-up is needed, so a lost one (the consumer
    /// looking, finding nothing, and sleeping through the offer) hangs the test until its timeout.
    func testEveryOfferWakesAConsumerThatSleepsWhenIdle() {
        let signal = ThreadWakeSignal()
        let queue = CaptureQueue<Int>(capacity: 10, signal: signal)
        let rounds = 20_000
        let consumed = ConditionLock(value: 0)
        let consumer = Thread {
            var count = 0
            while count < rounds {
                signal.wait { queue.count > 0 }
                count += queue.takeAll().count
                consumed.lock()
                consumed.unlock(withValue: count)
            }
        }
        consumer.start()
        for n in 0..<rounds {
            XCTAssertTrue(queue.offer(n))
            guard consumed.lock(whenValue: n + 1, timeoutSeconds: 10) else {
                return XCTFail("the consumer slept through offer \(n)")
            }
            consumed.unlock()
        }
    }

    func testWakeEndsAWaitWithNoWorkAndATimeoutEndsOneWithoutAWake() {
        let signal = ThreadWakeSignal()
        let woken = expectation(description: "wake() ended the wait")
        Thread {
            signal.wait { false }
            woken.fulfill()
        }.start()
        usleep(50_000)
        signal.wake()
        wait(for: [woken], timeout: 5)

        let started = ContinuousClock.now
        signal.wait(timeout: .milliseconds(50)) { false }
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - started, .milliseconds(50))
    }

    func testNoWaitWhenThereIsWorkAlready() {
        let signal = ThreadWakeSignal()
        let started = ContinuousClock.now
        signal.wait(timeout: .seconds(5)) { true }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(1))
    }
}
