import Foundation
import NIOConcurrencyHelpers
import TracegateExport
import XCTest

final class CaptureQueueTests: XCTestCase {
    func testAcceptsUntilFullThenRefusesAndCounts() {
        let queue = CaptureQueue<Int>(capacity: 3)
        XCTAssertTrue(queue.isAccepting)
        XCTAssertTrue(queue.offer(1))
        XCTAssertTrue(queue.offer(2))
        XCTAssertTrue(queue.isAccepting)
        XCTAssertTrue(queue.offer(3))
        XCTAssertFalse(queue.isAccepting, "a full queue tells event loops to stop capturing")
        XCTAssertFalse(queue.offer(4), "an exchange captured before the queue filled is dropped, not queued")
        queue.refuse()
        XCTAssertEqual(queue.refusedCount, 2)
        XCTAssertEqual(queue.count, 3)
    }

    /// Notes whether it was freed on the consumer's thread (`consumerThread`) or elsewhere.
    private final class Tracked: Sendable {
        let name: String
        let freed: NIOLockedValueBox<[String]>
        let consumerThread: NIOLockedValueBox<pthread_t?>
        init(_ name: String, freed: NIOLockedValueBox<[String]>, consumerThread: NIOLockedValueBox<pthread_t?>) {
            (self.name, self.freed, self.consumerThread) = (name, freed, consumerThread)
        }
        deinit {
            let byConsumer = consumerThread.withLockedValue { $0.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
            freed.withLockedValue { $0.append("\(name) by \(byConsumer ? "consumer" : "home")") }
        }
    }

    func testABatchsElementsAreFreedByTheirHomeNotByTheConsumer() {
        let queue = CaptureQueue<Tracked>(capacity: 4)
        let home = LoopReturns()
        let freed = NIOLockedValueBox<[String]>([])
        let consumerThread = NIOLockedValueBox<pthread_t?>(nil)
        queue.offer(Tracked("homed", freed: freed, consumerThread: consumerThread), home: home)
        queue.offer(Tracked("homeless", freed: freed, consumerThread: consumerThread))
        let consumed = DispatchSemaphore(value: 0)
        let names = NIOLockedValueBox<[String]>([])
        let consumer = Thread {
            consumerThread.withLockedValue { $0 = pthread_self() }
            let batch = queue.takeBatch()
            names.withLockedValue { $0 = batch.elements.map(\.name) }
            batch.sendHome()
            consumed.signal()
        }
        consumer.start()
        consumed.wait()
        XCTAssertEqual(names.withLockedValue { $0 }, ["homed", "homeless"], "oldest first")
        XCTAssertTrue(queue.isAccepting)
        XCTAssertEqual(freed.withLockedValue { $0 }, ["homeless by consumer"], "without a home, freed where it was used")
        XCTAssertEqual(home.count, 1)
        home.releaseAll()
        XCTAssertEqual(freed.withLockedValue { $0 }, ["homeless by consumer", "homed by home"])
        XCTAssertEqual(home.count, 0)
    }

    func testTakingEverythingReopensInOrder() {
        let queue = CaptureQueue<Int>(capacity: 2)
        queue.offer(1)
        queue.offer(2)
        XCTAssertFalse(queue.isAccepting)
        XCTAssertEqual(queue.takeAll(), [1, 2])
        XCTAssertTrue(queue.isAccepting)
        XCTAssertEqual(queue.count, 0)
        XCTAssertTrue(queue.offer(3))
        XCTAssertEqual(queue.takeAll(), [3])
        XCTAssertEqual(queue.takeAll(), [])
        XCTAssertEqual(queue.refusedCount, 0)
    }

    func testPausedQueueRefusesNewCapturesButKeepsThoseInFlight() {
        let queue = CaptureQueue<Int>(capacity: 10)
        queue.setPaused(true)
        XCTAssertFalse(queue.isAccepting, "paused: event loops stop capturing although there is room")
        XCTAssertTrue(queue.offer(1), "an exchange captured before the pause is still queued")
        XCTAssertEqual(queue.takeAll(), [1])
        XCTAssertFalse(queue.isAccepting, "taking what waits does not end a pause")
        queue.setPaused(false)
        XCTAssertTrue(queue.isAccepting)
    }

    func testConcurrentOffersLoseNothingUncounted() {
        let queue = CaptureQueue<Int>(capacity: 500)
        let takenSoFar = NIOLockedValueBox([Int]())
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for value in 0..<1_000 {
                queue.offer(worker * 1_000 + value)
                if value % 100 == 0 {
                    let batch = queue.takeAll()
                    takenSoFar.withLockedValue { $0 += batch }
                }
            }
        }
        let taken = takenSoFar.withLockedValue { $0 } + queue.takeAll()
        XCTAssertEqual(taken.count + queue.refusedCount, 4_000)
        XCTAssertEqual(Set(taken).count, taken.count)
    }
}
