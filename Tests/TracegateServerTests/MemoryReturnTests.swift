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

    func testAQuarterOfTheCrowdStayingOpenIsTrimmedAfterItSettled() {
        var policy = MemoryReturn()
        XCTAssertFalse(policy.observe(openConnections: 2_000))
        XCTAssertFalse(policy.observe(openConnections: 300), "just left: perhaps still leaving")
        XCTAssertFalse(policy.observe(openConnections: 300))
        XCTAssertFalse(policy.observe(openConnections: 310))
        XCTAssertTrue(policy.observe(openConnections: 300), "settled for \(MemoryReturn.settledLooks) looks: the rest is ordinary load")
        XCTAssertFalse(policy.observe(openConnections: 300), "the peak restarts from the last trim")
    }

    func testACrowdStillLeavingIsNotTrimmedUntilItSettles() {
        var policy = MemoryReturn()
        XCTAssertFalse(policy.observe(openConnections: 2_000))
        XCTAssertFalse(policy.observe(openConnections: 900))
        XCTAssertFalse(policy.observe(openConnections: 700), "still leaving")
        XCTAssertFalse(policy.observe(openConnections: 500), "still leaving")
        XCTAssertFalse(policy.observe(openConnections: 500))
        XCTAssertFalse(policy.observe(openConnections: 500))
        XCTAssertTrue(policy.observe(openConnections: 500))
    }

    func testAnInterruptedSettlingStartsOver() {
        var policy = MemoryReturn()
        XCTAssertFalse(policy.observe(openConnections: 2_000))
        XCTAssertFalse(policy.observe(openConnections: 600))
        XCTAssertFalse(policy.observe(openConnections: 600))
        XCTAssertFalse(policy.observe(openConnections: 1_500), "more than half open again")
        XCTAssertFalse(policy.observe(openConnections: 600))
        XCTAssertFalse(policy.observe(openConnections: 600))
        XCTAssertFalse(policy.observe(openConnections: 600))
        XCTAssertTrue(policy.observe(openConnections: 600))
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
