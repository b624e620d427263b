import XCTest

@testable import TracegateServer

final class TokenBucketTests: XCTestCase {
    func testRefillsAtTheRateUpToTheBurst() {
        var bucket = TokenBucket(rate: 10, burst: 2, nowNanos: 0)
        XCTAssertEqual([bucket.take(nowNanos: 0), bucket.take(nowNanos: 0), bucket.take(nowNanos: 0)], [true, true, false])
        XCTAssertTrue(bucket.take(nowNanos: 100_000_000), "one token back after 1/10 s")
        XCTAssertFalse(bucket.take(nowNanos: 100_000_000))
        XCTAssertEqual([bucket.take(nowNanos: 10_000_000_000), bucket.take(nowNanos: 10_000_000_000), bucket.take(nowNanos: 10_000_000_000)],
                       [true, true, false], "never more than the burst")
    }
}
