import Foundation
import XCTest

@testable import TracegateConfig
@testable import TracegateServer

final class EventLoopPlacementTests: XCTestCase {
    func testLoopsArePinnedWhenTheProcessOwnsOneCPUPerLoop() {
        XCTAssertEqual(EventLoopPlacement(threads: 2, usableCPUs: [0, 1], affinity: .auto).cpus, [0, 1])
        XCTAssertEqual(EventLoopPlacement(threads: 2, usableCPUs: [9, 2], affinity: .auto).cpus, [2, 9], "taskset -c 2,9")
    }

    func testLoopsAreLeftToTheSchedulerWhenPinningCannotHelp() {
        XCTAssertNil(EventLoopPlacement(threads: 2, usableCPUs: [0, 1], affinity: .off).cpus, "asked not to")
        XCTAssertNil(EventLoopPlacement(threads: 1, usableCPUs: [0], affinity: .auto).cpus, "one loop may move freely")
        XCTAssertNil(EventLoopPlacement(threads: 3, usableCPUs: [0, 1], affinity: .auto).cpus, "more loops than CPUs")
        XCTAssertNil(
            EventLoopPlacement(threads: 2, usableCPUs: Array(0..<64), affinity: .auto).cpus,
            "a CPU quota on a large machine: every replica would pick CPUs 0 and 1")
        XCTAssertNil(EventLoopPlacement(threads: 2, usableCPUs: [], affinity: .auto).cpus, "affinity unreadable")
    }

    func testThreadsZeroMeansOneLoopPerCPUTheProcessMayUse() {
        XCTAssertEqual(EventLoopPlacement.threadCount(setting: 0, coreCount: 8, usableCPUs: [0, 1]), 2, "taskset -c 0,1")
        XCTAssertEqual(EventLoopPlacement.threadCount(setting: 0, coreCount: 2, usableCPUs: Array(0..<64)), 2, "a CPU quota")
        XCTAssertEqual(EventLoopPlacement.threadCount(setting: 0, coreCount: 4, usableCPUs: []), 4, "affinity unreadable")
        XCTAssertEqual(EventLoopPlacement.threadCount(setting: 3, coreCount: 8, usableCPUs: [0, 1]), 3, "set explicitly")
    }

    /// The CPUs read from `sched_getaffinity` are the ones the kernel lets this process use, and a
    /// thread pinned to one of them runs there only.
    func testUsableCPUsAndPinningAreWhatTheKernelReports() throws {
        #if os(Linux)
        func allowed(_ status: String) throws -> [Int] {
            let line = try XCTUnwrap(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") })
            var cpus: [Int] = []
            for part in line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces).split(separator: ",") {
                let bounds = part.split(separator: "-").compactMap { Int($0) }
                cpus += Array(bounds[0]...(bounds.last ?? bounds[0]))
            }
            return cpus
        }
        let usable = EventLoopPlacement.usableCPUs()
        XCTAssertEqual(usable, try allowed(try String(contentsOfFile: "/proc/self/status", encoding: .utf8)))
        let cpu = try XCTUnwrap(usable.last)
        let result = ThreadResult()
        let thread = Thread {
            let pinned = EventLoopPlacement.pinCurrentThread(to: cpu)
            let status = try? String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8)
            result.set(pinned, status ?? "")
        }
        thread.start()
        let (pinned, status) = try XCTUnwrap(result.wait())
        XCTAssertTrue(pinned)
        XCTAssertEqual(try allowed(status), [cpu])
        XCTAssertFalse(EventLoopPlacement.pinCurrentThread(to: 4_096), "beyond the mask: refused, not a crash")
        #endif
    }
}

/// A value handed from another thread.
private final class ThreadResult: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: (Bool, String)?

    func set(_ pinned: Bool, _ status: String) {
        condition.lock()
        value = (pinned, status)
        condition.signal()
        condition.unlock()
    }

    func wait() -> (Bool, String)? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(5)
        while value == nil, condition.wait(until: deadline) {}
        return value
    }
}
