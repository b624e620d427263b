import Foundation
import XCTest

@testable import TracegateTrace

final class TraceRecordJSONTests: XCTestCase {
    private func decode(_ line: [UInt8]) throws -> TraceRecord {
        XCTAssertEqual(line.last, UInt8(ascii: "\n"), "a line ends with a newline")
        XCTAssertEqual(line.filter { $0 == UInt8(ascii: "\n") }.count, 1, "a record is exactly one line")
        return try JSONDecoder().decode(TraceRecord.self, from: Data(line.dropLast()))
    }

    /// What `Codable` writes, as the trace file held it before: the same object, byte for byte, for a
    /// record whose strings need no escaping choices.
    func testWritesWhatCodableWrites() throws {
        try assertWritesWhatCodableWrites(TraceRecordFixtures.chat())
    }

    private func assertWritesWhatCodableWrites(_ record: TraceRecord, line: UInt = #line) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let expected = try encoder.encode(record)
        XCTAssertEqual(
            String(decoding: TraceRecordJSON.line(record).dropLast(), as: UTF8.self), String(decoding: expected, as: UTF8.self),
            line: line)
    }

    func testEveryFieldRoundTrips() throws {
        var record = TraceRecordFixtures.chat()
        record.parentSpanID = SpanID(value: 0x0102_0304_0506_0708)
        record.status = .error(message: "upstream said \"no\"\n\tbye \u{1}")
        record.requestPreview = "préview / ünïcode 🚀"
        record.responsePreview = "\\ back\\slash"
        record.attributes["pi"] = .double(3.141592653589793)
        record.attributes["tiny"] = .double(1e-300)
        record.attributes["nan"] = .double(.nan)
        record.attributes["inf"] = .double(-.infinity)
        record.attributes["yes"] = .bool(true)
        record.attributes["negative"] = .int(-42)
        record.attributes["max"] = .int(.max)
        record.events = [
            .exception(type: "HTTPError", message: "HTTP 500", timeUnixNano: 7),
            SpanEvent(name: "first token", timeUnixNano: .max, attributes: [:]),
        ]
        record.metadata["é"] = "\u{7f}"
        let decoded = try decode(TraceRecordJSON.line(record))
        // NaN is not equal to itself: compare it apart.
        guard case .double(let nan)? = decoded.attributes["nan"] else { return XCTFail("nan lost") }
        XCTAssertTrue(nan.isNaN)
        var comparable = decoded
        comparable.attributes["nan"] = nil
        record.attributes["nan"] = nil
        XCTAssertEqual(comparable, record)
    }

    func testAbsentOptionalsAreLeftOut() throws {
        let record = TraceRecord(
            traceID: TraceID(high: 1, low: 2), rootSpanID: SpanID(value: 3), name: "GET /", startTimeUnixNano: 0,
            endTimeUnixNano: 0)
        let line = TraceRecordJSON.line(record)
        let object = try parseJSON(Array(line.dropLast()))
        XCTAssertEqual(Set(object.keys), ["attributes", "endTimeUnixNano", "events", "metadata", "name", "rootSpanID", "spanType", "startTimeUnixNano", "status", "tags", "traceID"])
        XCTAssertEqual(try decode(line), record)
    }

    /// Keys in UTF-8 byte order, as `JSONEncoder`'s `.sortedKeys` writes them, whatever the keys hold.
    func testKeysAreInTheOrderCodableWrites() throws {
        var record = TraceRecordFixtures.chat()
        for key in ["b", "a", "é", "z", "aa", "Z", "e\u{301}", "_", "a.b", "😀", "ß", "A"] {
            record.tags[key] = key
            record.attributes[key] = .string(key)
        }
        try assertWritesWhatCodableWrites(record)
    }

    /// Escapes at either end of a string, back to back, and between long plain runs.
    func testStringsAreEscapedWherever() throws {
        var record = TraceRecordFixtures.chat()
        let texts = [
            "\"quoted\"", "\\", "\n\n", String(repeating: "x", count: 300) + "\"" + String(repeating: "y", count: 300),
            "\u{0}\u{1f}\u{7f}é\"", "", "plain",
        ]
        for (index, text) in texts.enumerated() { record.tags["t\(index)"] = text }
        record.inputs = texts.joined(separator: "\t")
        XCTAssertEqual(try decode(TraceRecordJSON.line(record)), record)
        let line = String(decoding: TraceRecordJSON.line(record), as: UTF8.self)
        XCTAssertTrue(line.contains(#""t0":"\"quoted\"""#), line)
        XCTAssertTrue(line.contains(#""t4":"\u0000\u001f\u007fé\"""#), line)
    }

    /// Every character that needs an escape, at every offset within an eight-byte word, among plain
    /// and non-ASCII text: decoding gives the string back.
    func testEveryEscapeAtEveryOffsetRoundTrips() throws {
        let specials = (0..<0x20).map { String(UnicodeScalar(UInt8($0))) } + ["\u{7F}", "\"", "\\"]
        for special in specials {
            for offset in 0..<17 {
                let text = String(repeating: "a", count: offset) + special + "é🚀" + String(repeating: "b", count: 9) + special
                var writer = TraceJSONWriter()
                writer.string(text)
                let decoded = try JSONDecoder().decode(String.self, from: Data(writer.bytes))
                XCTAssertEqual(decoded, text, "special \(Array(special.utf8)) at \(offset)")
            }
        }
        for word: UInt64 in [0, 0x2020_2020_2020_2020, 0x7F7F_7F7F_7F7F_7F7F, 0xFFFF_FFFF_FFFF_FFFF, 0x4141_4141_4141_4141] {
            let bytes = withUnsafeBytes(of: word) { Array($0) }
            XCTAssertEqual(
                TraceJSONWriter.needsEscape(word), bytes.contains { $0 < 0x20 || $0 == 0x7F || $0 == 0x22 || $0 == 0x5C }, "\(bytes)")
        }
    }
}

