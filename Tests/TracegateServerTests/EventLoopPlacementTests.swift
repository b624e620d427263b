import XCTest

@testable import TracegateConfig
@testable import TracegateServer

final class EventLoopPlacementTests: XCTestCase {
    func testEachLoopGetsAUsableCPUOfItsOwn() {
        XCTAssertEqual(EventLoopPlacement(threads: 2, usableCPUs: [0, 1], affinity: .auto).cpus, [0, 1])
        XCTAssertEqual(EventLoopPlacement(threads: 2, usableCPUs: [5, 2, 9], affinity: .auto).cpus, [2, 5])
        XCTAssertEqual(EventLoopPlacement(threads: 4, usableCPUs: Array(0..<8), affinity: .auto).cpus, [0, 1, 2, 3])
    }

    func testLoopsAreLeftToTheSchedulerWhenPinningCannotHelp() {
        XCTAssertNil(EventLoopPlacement(threads: 2, usableCPUs: [0, 1], affinity: .off).cpus, "asked not to")
        XCTAssertNil(EventLoopPlacement(threads: 1, usableCPUs: [0, 1], affinity: .auto).cpus, "one loop may move freely")
        XCTAssertNil(EventLoopPlacement(threads: 3, usableCPUs: [0, 1], affinity: .auto).cpus, "more loops than CPUs")
        XCTAssertNil(EventLoopPlacement(threads: 2, usableCPUs: [], affinity: .auto).cpus, "affinity unreadable")
    }

    /// The CPUs read from `sched_getaffinity` are the ones the kernel lets this process use.
    func testUsableCPUsAreThoseTheProcessMayRunOn() throws {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try XCTUnwrap(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") })
        var expected: [Int] = []
        for part in line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces).split(separator: ",") {
            let bounds = part.split(separator: "-").compactMap { Int($0) }
            expected += Array(bounds[0]...(bounds.last ?? bounds[0]))
        }
        XCTAssertEqual(EventLoopPlacement.usableCPUs(), expected)
    }
}
