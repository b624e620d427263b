import Atomics
import Foundation
import XCTest

@testable import TracegateServer

final class BackgroundPacingTests: XCTestCase {
    private let twoCPUs = BackgroundPacing(processors: 2, idlePolicyRefused: false)

    func testWhileNoMoreTasksAreReadyThanCPUsTheThreadOnlyYields() {
        XCTAssertEqual(twoCPUs.pause(readyTasks: 1), .yield, "only itself")
        XCTAssertEqual(twoCPUs.pause(readyTasks: 2), .yield, "itself and one more: no task waits for a CPU")
    }

    func testOnceEveryCPUHasAnotherTaskReadyItSleeps() {
        XCTAssertEqual(twoCPUs.pause(readyTasks: 3), .sleep(nanoseconds: BackgroundPacing.contendedPauseNanoseconds))
        XCTAssertEqual(twoCPUs.pause(readyTasks: 9), .sleep(nanoseconds: BackgroundPacing.contendedPauseNanoseconds))
        XCTAssertEqual(BackgroundPacing(processors: 8, idlePolicyRefused: false).pause(readyTasks: 8), .yield)
        XCTAssertEqual(
            BackgroundPacing(processors: 8, idlePolicyRefused: false).pause(readyTasks: 9), .sleep(nanoseconds: BackgroundPacing.contendedPauseNanoseconds))
    }

    func testAtNice19ItSleepsEvenWhileNoTaskWaits() {
        let nice19 = BackgroundPacing(processors: 2, idlePolicyRefused: true)
        XCTAssertEqual(nice19.pause(readyTasks: 1), .sleep(nanoseconds: BackgroundPacing.shortestSleepNanoseconds))
        XCTAssertEqual(nice19.pause(readyTasks: 3), .sleep(nanoseconds: BackgroundPacing.contendedPauseNanoseconds))
    }

    func testWithoutACountItSleepsLessThanWhenContended() {
        XCTAssertEqual(twoCPUs.pause(readyTasks: nil), .sleep(nanoseconds: BackgroundPacing.unknownLoadPauseNanoseconds))
        XCTAssertLessThan(BackgroundPacing.unknownLoadPauseNanoseconds, BackgroundPacing.contendedPauseNanoseconds)
    }

    /// The regression: with every CPU busy, a yield kept the thread on the run queue, and an
    /// idle-priority thread that is picked again and again kept other ready tasks waiting for tens of
    /// milliseconds. The pause must leave the run queue: a sleep, which the kernel counts as a
    /// voluntary context switch (a yield never is).
    func testWithEveryCPUBusyAPauseLeavesTheRunQueue() throws {
        #if os(Linux)
        let processors = BackgroundThread.processors
        let spinning = ManagedAtomic(true)
        let spinners = (0..<processors).map { _ in Thread { while spinning.load(ordering: .relaxed) {} } }
        spinners.forEach { $0.start() }
        defer { spinning.store(false, ordering: .relaxed) }
        let outcome = PauseOutcome()
        let thread = Thread {
            // Until the spinners show as ready (a CPU quota can keep them off the run queue).
            let deadline = Date().addingTimeInterval(2)
            var ready = ReadyTasks.count() ?? 0
            while ready <= processors, Date() < deadline {
                usleep(1_000)
                ready = ReadyTasks.count() ?? 0
            }
            BackgroundThread.pause(readyTasks: 1)  // first use: anything it loads, it loads now
            let before = Self.voluntarySwitches()
            BackgroundThread.pause(readyTasks: ready)  // the count checked above, not a second read
            outcome.set(ready: ready, switches: Self.voluntarySwitches() - before)
        }
        thread.start()
        let (ready, switches) = try XCTUnwrap(outcome.wait())
        try XCTSkipUnless(ready > processors, "the spinners never showed as ready (\(ready) tasks for \(processors) CPUs)")
        XCTAssertEqual(BackgroundThread.pacing.pause(readyTasks: ready), .sleep(nanoseconds: BackgroundPacing.contendedPauseNanoseconds))
        XCTAssertGreaterThanOrEqual(switches, 1, "the pause slept rather than yielded")
        #endif
    }

    private static func voluntarySwitches() -> Int {
        let status = (try? String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("voluntary_ctxt_switches:") } ?? ""
        return Int(line.split(separator: "\t").last.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? "") ?? 0
    }
}

/// What the pausing thread saw, handed to the test.
private final class PauseOutcome: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: (ready: Int, switches: Int)?

    func set(ready: Int, switches: Int) {
        condition.lock()
        value = (ready, switches)
        condition.signal()
        condition.unlock()
    }

    func wait() -> (ready: Int, switches: Int)? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(10)
        while value == nil, condition.wait(until: deadline) {}
        return value
    }
}
