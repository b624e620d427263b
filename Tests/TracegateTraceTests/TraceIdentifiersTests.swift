import XCTest
@testable import TracegateTrace

final class TraceIdentifiersTests: XCTestCase {
    func testTraceIDHexIs32LowerCaseDigitsAndMLflowIDAddsPrefix() {
        let id = TraceRecordFixtures.traceID
        XCTAssertEqual(id.hex, "c79367d3709dc94f10a95dc27a1659b2")
        XCTAssertEqual(id.mlflowID, "tr-c79367d3709dc94f10a95dc27a1659b2")
        XCTAssertEqual(TraceID(high: 1, low: 2).hex, "00000000000000010000000000000002")
    }

    func testSpanIDHexIs16LowerCaseDigits() {
        XCTAssertEqual(TraceRecordFixtures.spanID.hex, "a1b2c3d4e5f60718")
        XCTAssertEqual(SpanID(value: 0xAB).hex, "00000000000000ab")
    }

    func testRandomIDsComeFromTheGivenGeneratorAndAreFormatted() {
        var generator = SeededGenerator(state: 42)
        var seen = Set<String>()
        for _ in 0..<1000 {
            let trace = TraceID.random(using: &generator)
            let span = SpanID.random(using: &generator)
            XCTAssertEqual(trace.hex.count, 32)
            XCTAssertEqual(span.hex.count, 16)
            XCTAssertTrue(trace.hex.allSatisfy { "0123456789abcdef".contains($0) })
            XCTAssertTrue(seen.insert(trace.hex).inserted)
        }
        var again = SeededGenerator(state: 42)
        var first = SeededGenerator(state: 42)
        XCTAssertEqual(TraceID.random(using: &again), TraceID.random(using: &first))
    }

    func testRandomIDsAreNeverZero() {
        var zerosFirst = ScriptedGenerator(values: [0, 0, 0, 5])
        XCTAssertEqual(TraceID.random(using: &zerosFirst), TraceID(high: 0, low: 5))
        var zeroSpan = ScriptedGenerator(values: [0, 0, 9])
        XCTAssertEqual(SpanID.random(using: &zeroSpan), SpanID(value: 9))
    }

    func testHexParsingRoundTripsAndAcceptsUpperCase() {
        let id = TraceRecordFixtures.traceID
        XCTAssertEqual(TraceID(hex: id.hex), id)
        XCTAssertEqual(TraceID(hex: id.hex.uppercased()), id)
        XCTAssertEqual(TraceID(mlflowID: id.mlflowID), id)
        XCTAssertEqual(SpanID(hex: "A1B2C3D4E5F60718"), TraceRecordFixtures.spanID)
    }

    func testHexParsingRejectsWrongLengthsNonHexAndZero() {
        for bad in ["", "c79367d3709dc94f10a95dc27a1659b", "c79367d3709dc94f10a95dc27a1659b2a",
                    "g79367d3709dc94f10a95dc27a1659b2", " c79367d3709dc94f10a95dc27a1659b",
                    "c79367d3709dc94f-0a95dc27a1659b2", String(repeating: "0", count: 32),
                    "c79367d3709dc94f10a95dc27a1659b\u{e9}"] {
            XCTAssertNil(TraceID(hex: bad), bad)
        }
        XCTAssertNil(TraceID(mlflowID: "c79367d3709dc94f10a95dc27a1659b2"))
        XCTAssertNil(TraceID(mlflowID: "TR-c79367d3709dc94f10a95dc27a1659b2"))
        XCTAssertNil(SpanID(hex: "0000000000000000"))
        XCTAssertNil(SpanID(hex: "a1b2c3d4e5f6071"))
        XCTAssertNil(SpanID(hex: "+1b2c3d4e5f60718"))
    }

    func testIDsEncodeAsHexStrings() throws {
        let data = try JSONEncoder().encode([TraceRecordFixtures.traceID])
        XCTAssertEqual(String(decoding: data, as: UTF8.self), #"["c79367d3709dc94f10a95dc27a1659b2"]"#)
        XCTAssertThrowsError(try JSONDecoder().decode([SpanID].self, from: Data(#"["xyz"]"#.utf8)))
    }
}
