import XCTest

@testable import TracegateServer

final class ClientRetryCountTests: XCTestCase {
    func testStainlessCountsRetriesAndEnvoyCountsAttempts() {
        XCTAssertEqual(TraceTap.clientRetryCount(stainless: "0", envoyAttempt: nil), 0)
        XCTAssertEqual(TraceTap.clientRetryCount(stainless: "2", envoyAttempt: nil), 2)
        XCTAssertEqual(TraceTap.clientRetryCount(stainless: nil, envoyAttempt: "1"), 0)
        XCTAssertEqual(TraceTap.clientRetryCount(stainless: nil, envoyAttempt: "3"), 2)
        XCTAssertEqual(TraceTap.clientRetryCount(stainless: "1", envoyAttempt: "5"), 1, "the client's own count wins")
        XCTAssertNil(TraceTap.clientRetryCount(stainless: nil, envoyAttempt: nil))
    }

    func testAnythingButASmallDecimalIsIgnored() {
        for junk in ["", "-1", "1.5", " 1", "one", "1234567", "٣"] {
            XCTAssertNil(TraceTap.clientRetryCount(stainless: junk, envoyAttempt: nil), junk)
        }
        XCTAssertNil(TraceTap.clientRetryCount(stainless: nil, envoyAttempt: "0"), "attempts start at 1")
        XCTAssertEqual(TraceTap.clientRetryCount(stainless: "999999", envoyAttempt: nil), 999_999)
    }
}
