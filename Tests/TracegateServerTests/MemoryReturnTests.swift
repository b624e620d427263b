import Foundation
import XCTest

@testable import TracegateServer

final class MemoryReturnTests: XCTestCase {
    func testTrimsOnceAfterACrowdOfConnectionsIsGone() {
        var policy = MemoryReturn()
        XCTAssertFalse(policy.observe(openConnections: 10))
        XCTAssertFalse(policy.observe(openConnections: 4_000), "rising: nothing to give back")
        XCTAssertFalse(policy.observe(openConnections: 2_500), "more than half still open")
        XCTAssertFalse(policy.observe(openConnections: 1_000), "a quarter open, just left: perhaps still leaving")
        XCTAssertFalse(policy.observe(openConnections: 501), "just over an eighth")
        XCTAssertTrue(policy.observe(openConnections: 200))
        XCTAssertFalse(policy.observe(openConnections: 0), "the peak restarts from the last trim: 200 is no crowd")
    }

    /// Which of `looks` (open connections, one look each) a fresh policy trims at.
    private func trims(_ looks: [Int]) -> [Int] {
        var policy = MemoryReturn()
        return looks.indices.filter { policy.observe(openConnections: looks[$0]) }
    }

    func testAQuarterOfTheCrowdStayingOpenIsTrimmedAfterItSettled() {
        // Just left (perhaps still leaving), then settled for `settledLooks` looks: the rest is ordinary load.
        XCTAssertEqual(trims([2_000, 300, 300, 310, 300, 300]), [4], "and the peak restarts from the trim")
    }

    func testACrowdStillLeavingIsNotTrimmedUntilItSettles() {
        XCTAssertEqual(trims([2_000, 900, 700, 500, 500, 500, 500]), [6])
    }

    func testAnInterruptedSettlingStartsOver() {
        XCTAssertEqual(trims([2_000, 600, 600, 1_500, 600, 600, 600, 600]), [7], "more than half open again at 1,500")
    }

    func testSmallDropsNeverTrim() {
        var policy = MemoryReturn()
        XCTAssertFalse(policy.observe(openConnections: 200))
        XCTAssertFalse(policy.observe(openConnections: 0), "fewer than \(MemoryReturn.minimumDrop) closed")
    }
}

final class FileDescriptorLimitTests: XCTestCase {
    func testConnectionCapLeavesAReserveAndTwoDescriptorsPerConnection() {
        XCTAssertEqual(FileDescriptorLimit.connectionsAllowed(byLimit: 128), 48)
        XCTAssertEqual(FileDescriptorLimit.connectionsAllowed(byLimit: 1_024), 384)
        XCTAssertEqual(FileDescriptorLimit.connectionsAllowed(byLimit: 65_536), 32_640)
        XCTAssertEqual(FileDescriptorLimit.connectionsAllowed(byLimit: 2), 1)
    }

    func testTableIsSizedForTheConnectionsWithinTheLimitAndTheCap() {
        XCTAssertEqual(FileDescriptorLimit.tableSize(maxConnections: 5_000, limit: 1_048_576), 10_256)
        XCTAssertEqual(FileDescriptorLimit.tableSize(maxConnections: 524_160, limit: 1_048_576), FileDescriptorLimit.presizedDescriptors)
        XCTAssertEqual(FileDescriptorLimit.tableSize(maxConnections: 384, limit: 1_024), 1_024)
    }

    func testPresizingGrowsTheKernelsDescriptorTable() throws {
        let before = try XCTUnwrap(Self.descriptorTableSlots())
        let target = min(before * 4, FileDescriptorLimit.raiseToHardLimit())
        // Earlier tests may have grown the table to this process's limit already: then there is nothing to show.
        try XCTSkipUnless(target > before, "the open-file limit (\(target)) leaves no room to grow the table (\(before) slots)")
        XCTAssertTrue(FileDescriptorLimit.presizeTable(descriptors: target))
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(Self.descriptorTableSlots()), target)
        XCTAssertEqual(fcntl(Int32(target - 1), F_GETFD), -1, "the placeholder descriptor is closed again")
    }

    /// The slots of this process's descriptor table (`FDSize` in /proc/self/status).
    private static func descriptorTableSlots() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        let line = status.split(separator: "\n").first { $0.hasPrefix("FDSize:") }
        return line.flatMap { Int($0.dropFirst("FDSize:".count).trimmingCharacters(in: .whitespaces)) }
    }
}
