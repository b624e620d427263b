import XCTest

@testable import TracegateServer

final class MemoryReturnTests: XCTestCase {
    func testTrimsOnceAfterACrowdOfConnectionsIsGone() {
        var policy = MemoryReturn()
        XCTAssertFalse(policy.observe(openConnections: 10))
        XCTAssertFalse(policy.observe(openConnections: 4_000), "rising: nothing to give back")
        XCTAssertFalse(policy.observe(openConnections: 2_500), "more than half still open")
        XCTAssertFalse(policy.observe(openConnections: 1_000), "a quarter still streams: trimming would stall it")
        XCTAssertFalse(policy.observe(openConnections: 501), "just over an eighth")
        XCTAssertTrue(policy.observe(openConnections: 200))
        XCTAssertFalse(policy.observe(openConnections: 0), "the peak restarts from the last trim: 200 is no crowd")
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
}
