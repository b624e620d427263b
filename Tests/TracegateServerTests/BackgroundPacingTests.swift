import Atomics
import Foundation
import XCTest

@testable import TracegateServer

final class BackgroundPacingTests: XCTestCase {
    private let twoCPUs = BackgroundPacing(processors: 2, idlePolicyRefused: false)

    func testWhileACPUIsFreeTheThreadOnlyYields() {
        XCTAssertEqual(twoCPUs.pause(readyTasks: 1), .yield, "only itself")
        XCTAssertEqual(twoCPUs.pause(readyTasks: 2), .yield, "itself and one more: the other CPU is free")
    }

    func testOnceEveryCPUHasAnotherTaskReadyItSleeps() {
        XCTAssertEqual(twoCPUs.pause(readyTasks: 3), .sleep(nanoseconds: BackgroundPacing.contendedPause))
        XCTAssertEqual(twoCPUs.pause(readyTasks: 9), .sleep(nanoseconds: BackgroundPacing.contendedPause))
        XCTAssertEqual(BackgroundPacing(processors: 8, idlePolicyRefused: false).pause(readyTasks: 8), .yield)
        XCTAssertEqual(
            BackgroundPacing(processors: 8, idlePolicyRefused: false).pause(readyTasks: 9), .sleep(nanoseconds: BackgroundPacing.contendedPause))
    }

    func testAtNice19ItSleepsEvenWhileACPUIsFree() {
        let nice19 = BackgroundPacing(processors: 2, idlePolicyRefused: true)
        XCTAssertEqual(nice19.pause(readyTasks: 1), .sleep(nanoseconds: BackgroundPacing.shortestSleep))
        XCTAssertEqual(nice19.pause(readyTasks: 3), .sleep(nanoseconds: BackgroundPacing.contendedPause))
    }

    func testWithoutACountItSleepsAQuarterOfTheContendedPause() {
        XCTAssertEqual(twoCPUs.pause(readyTasks: nil), .sleep(nanoseconds: BackgroundPacing.contendedPause / 4))
    }

    func testTheReadyCountIsReadFromLoadavgsFourthField() {
        func parse(_ text: String) -> Int? {
            Array(text.utf8).withUnsafeBufferPointer { ReadyTasks.parse($0) }
        }
        XCTAssertEqual(parse("0.52 0.58 0.59 3/245 12345\n"), 3)
        XCTAssertEqual(parse("12.00 9.10 8.00 117/2048 99\n"), 117)
        XCTAssertNil(parse("0.52 0.58 0.59\n"), "no fourth field")
        XCTAssertNil(parse("0.52 0.58 0.59 x/245 1\n"))
        XCTAssertNil(parse(""))
        #if os(Linux)
        let now = try? XCTUnwrap(ReadyTasks.count())
        XCTAssertGreaterThanOrEqual(now ?? 0, 1, "this thread is running")
        #endif
    }

    /// The regression: with every CPU busy, a yield kept the thread on the run queue, and an
    /// idle-priority thread that is picked again and again kept other ready tasks waiting for tens of
    /// milliseconds. The pause must leave the run queue: a sleep, which the kernel counts as a
    /// voluntary context switch (a yield never is).
    func testWithEveryCPUBusyAPauseLeavesTheRunQueue() throws {
        #if os(Linux)
        let processors = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let spinning = ManagedAtomic(true)
        let spinners = (0..<processors).map { _ in Thread { while spinning.load(ordering: .relaxed) {} } }
        spinners.forEach { $0.start() }
        defer { spinning.store(false, ordering: .relaxed) }
        let outcome = PauseOutcome()
        let thread = Thread {
            usleep(20_000)  // the spinners are running
            let before = Self.voluntarySwitches()
            let ready = ReadyTasks.count() ?? 0
            BackgroundThread.pause()
            outcome.set(ready: ready, switches: Self.voluntarySwitches() - before)
        }
        thread.start()
        let (ready, switches) = try XCTUnwrap(outcome.wait())
        XCTAssertGreaterThan(ready, processors, "the spinners and this thread are ready")
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
