import XCTest

@testable import TracegateTrace

final class ASCIITextTests: XCTestCase {
    func testMediaTypeDropsParametersAndBlanksAndLowersCase() {
        XCTAssertEqual(ASCIIText.mediaType("text/event-stream"), "text/event-stream")
        XCTAssertEqual(ASCIIText.mediaType(" \tApplication/JSON ; charset=utf-8"), "application/json")
        XCTAssertEqual(ASCIIText.mediaType("TEXT/Event-Stream;charset=UTF-8"), "text/event-stream")
        XCTAssertEqual(ASCIIText.mediaType(";x=y"), "")
        XCTAssertEqual(ASCIIText.mediaType("   "), "")
        XCTAssertEqual(ASCIIText.mediaType(""), "")
    }

    func testLowercasingTouchesOnlyASCIILetters() {
        XCTAssertEqual(ASCIIText.lowercased("GZip"), "gzip")
        XCTAssertEqual(ASCIIText.lowercased("already lower"), "already lower")
        XCTAssertEqual(ASCIIText.lowercased("ÉTÉ-X"), "ÉtÉ-x")
    }

    func testContainsFindsBytesAnywhere() {
        XCTAssertTrue(ASCIIText.contains("application/vnd.api+json", "json"))
        XCTAssertTrue(ASCIIText.contains("json", "json"))
        XCTAssertTrue(ASCIIText.contains("jsjson", "json"))
        XCTAssertFalse(ASCIIText.contains("jso", "json"))
        XCTAssertFalse(ASCIIText.contains("", "json"))
        XCTAssertTrue(ASCIIText.contains("anything", ""))
    }
}
