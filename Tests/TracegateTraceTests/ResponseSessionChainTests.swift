import XCTest

@testable import TracegateTrace

final class ResponseSessionChainTests: XCTestCase {
    func testRemembersUpToItsCapacityForgettingTheOldestFirst() {
        var chain = ResponseSessionChain(capacity: 3)
        for i in 1...3 { chain.remember(response: "r\(i)", session: "s\(i)") }
        XCTAssertEqual(chain.session(continuing: "r1"), "s1")
        chain.remember(response: "r4", session: "s4")
        XCTAssertNil(chain.session(continuing: "r1"), "the oldest is forgotten")
        XCTAssertEqual(chain.count, 3)
        for i in 5...10 { chain.remember(response: "r\(i)", session: "s\(i)") }
        XCTAssertEqual(chain.count, 3)
        XCTAssertEqual((1...10).compactMap { chain.session(continuing: "r\($0)") }, ["s8", "s9", "s10"])
    }

    func testRememberingAResponseAgainUpdatesItWithoutTakingASecondPlace() {
        var chain = ResponseSessionChain(capacity: 2)
        chain.remember(response: "r1", session: "a")
        chain.remember(response: "r1", session: "b")
        chain.remember(response: "r2", session: "c")
        XCTAssertEqual(chain.session(continuing: "r1"), "b")
        XCTAssertEqual(chain.count, 2)
    }

    func testCapacityZeroRemembersNothing() {
        var chain = ResponseSessionChain(capacity: 0)
        chain.remember(response: "r1", session: "a")
        XCTAssertNil(chain.session(continuing: "r1"))
    }
}
