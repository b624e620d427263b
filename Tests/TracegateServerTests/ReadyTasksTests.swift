import XCTest

@testable import TracegateServer

final class ReadyTasksTests: XCTestCase {
    private func parse(_ text: String) -> Int? {
        Array(text.utf8).withUnsafeBufferPointer { ReadyTasks.parse($0) }
    }

    func testTheCountIsTheNumeratorOfTheFourthField() {
        XCTAssertEqual(parse("0.52 0.58 0.59 3/245 12345\n"), 3)
        XCTAssertEqual(parse("12.00 9.10 8.00 117/2048 99\n"), 117)
        XCTAssertEqual(parse("0.52  0.58 0.59 3/245 12345\n"), 3, "runs of spaces separate as one")
    }

    func testAnythingElseGivesNoCount() {
        XCTAssertNil(parse("0.52 0.58 0.59\n"), "no fourth field")
        XCTAssertNil(parse("0.52 0.58 0.59 3"), "cut short before the slash")
        XCTAssertNil(parse("0.52 0.58 0.59 /245 1\n"), "no digits")
        XCTAssertNil(parse("0.52 0.58 0.59 x/245 1\n"))
        XCTAssertNil(parse("0.52 0.58 0.59 1234567890/245 1\n"), "more digits than a count can have")
        XCTAssertNil(parse(""))
    }

    func testTheRunningKernelGivesACount() throws {
        #if os(Linux)
        let count = try XCTUnwrap(ReadyTasks.count())
        XCTAssertGreaterThanOrEqual(count, 1, "this thread is running")
        #endif
    }
}
