import XCTest

@testable import TracegateTrace

final class W3CTraceParentTests: XCTestCase {
    func testValidVersion00IsParsed() throws {
        let parent = try XCTUnwrap(W3CTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
        XCTAssertEqual(parent.traceIDHigh, 0x4bf92f3577b34da6)
        XCTAssertEqual(parent.traceIDLow, 0xa3ce929d0e0e4736)
        XCTAssertEqual(parent.parentSpanID, 0x00f067aa0ba902b7)
        XCTAssertEqual(parent.flags, 1)
    }

    func testInvalidValuesAreIgnored() {
        for value in [
            "", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  // too short
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero parent
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // uppercase
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // forbidden version
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  // 00 has no more fields
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            XCTAssertNil(W3CTraceParent(value), value)
        }
        XCTAssertNotNil(W3CTraceParent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"), "future versions")
    }

    func testHeaderRoundTrips() throws {
        let value = W3CTraceParent.header(traceIDHigh: 1, traceIDLow: 0xabc, spanID: 0xfe, sampled: true)
        XCTAssertEqual(value, "00-00000000000000010000000000000abc-00000000000000fe-01")
        XCTAssertEqual(W3CTraceParent(value), W3CTraceParent(traceIDHigh: 1, traceIDLow: 0xabc, parentSpanID: 0xfe, flags: 1))
    }
}
