import XCTest

@testable import TracegateServer

final class RecentTraceIndexTests: XCTestCase {
    func testTheNewestTraceOfARequestIDWinsAndTheOldestAreForgotten() {
        var index = RecentTraceIndex(capacity: 3)
        index.remember(requestID: "r1", traceID: "t1")
        index.remember(requestID: "r1", traceID: "t2")  // a client retry with the same request id
        XCTAssertEqual(index.traceID(forRequestID: "r1"), "t2")
        index.remember(requestID: "r2", traceID: "t3")
        index.remember(requestID: "r3", traceID: "t4")  // evicts (r1, t1): r1 still names t2
        XCTAssertEqual(index.traceID(forRequestID: "r1"), "t2")
        XCTAssertFalse(index.contains(traceID: "t1"))
        index.remember(requestID: "r4", traceID: "t5")  // evicts (r1, t2)
        XCTAssertNil(index.traceID(forRequestID: "r1"))
        XCTAssertEqual([index.contains(traceID: "t3"), index.contains(traceID: "t4"), index.contains(traceID: "t5")], [true, true, true])
    }
}
