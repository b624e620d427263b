import Foundation
import XCTest
@testable import TracegateTrace

final class StartTraceEncodingTests: XCTestCase {
    private func traceInfo(_ record: TraceRecord, experimentID: String = "1") throws -> [String: Any] {
        let json = try parseJSON(StartTraceV3.body(record, experimentID: experimentID))
        XCTAssertEqual(Set(json.keys), ["trace"])
        let trace = try XCTUnwrap(json["trace"] as? [String: Any])
        XCTAssertEqual(Set(trace.keys), ["trace_info"])
        return try XCTUnwrap(trace["trace_info"] as? [String: Any])
    }

    func testChatRecordMatchesTheReferenceExample() throws {
        let info = try traceInfo(TraceRecordFixtures.chat())
        XCTAssertEqual(Set(info.keys), ["trace_id", "client_request_id", "trace_location", "request_time",
                                        "execution_duration", "state", "trace_metadata", "tags"])
        XCTAssertEqual(info["trace_id"] as? String, "tr-c79367d3709dc94f10a95dc27a1659b2")
        XCTAssertEqual(info["client_request_id"] as? String, "req-7f3c9a")
        let location = try XCTUnwrap(info["trace_location"] as? [String: Any])
        XCTAssertEqual(location["type"] as? String, "MLFLOW_EXPERIMENT")
        XCTAssertEqual((location["mlflow_experiment"] as? [String: Any])?["experiment_id"] as? String, "1")
        XCTAssertEqual(info["request_time"] as? String, "2026-11-24T23:38:07.174Z")
        XCTAssertEqual(info["execution_duration"] as? String, "1.250s")
        XCTAssertEqual(info["state"] as? String, "OK")
        XCTAssertEqual(info["trace_metadata"] as? [String: String], [
            "mlflow.trace.user": "u1", "mlflow.trace.session": "sess-42",
            "mlflow.trace_schema.version": "3", "proxy.backend": "backend-a",
        ])
        XCTAssertEqual(info["tags"] as? [String: String], ["mlflow.traceName": "chat.completions", "proxy.backend": "backend-a"])
    }

    func testRequestTimeAndStateAreTheLastFields() throws {
        let text = String(decoding: StartTraceV3.body(TraceRecordFixtures.chat(), experimentID: "1"), as: UTF8.self)
        XCTAssertTrue(text.hasSuffix(#""request_time":"2026-11-24T23:38:07.174Z","state":"OK"}}}"#), text)
    }

    func testErrorStateMinimalRecordAndPreviews() throws {
        var record = TraceRecord(
            traceID: TraceRecordFixtures.traceID, rootSpanID: TraceRecordFixtures.spanID, name: "POST /v1/messages",
            startTimeUnixNano: 0, endTimeUnixNano: 999_999, status: .error(message: "HTTP 502"))
        var info = try traceInfo(record, experimentID: "42")
        XCTAssertEqual(Set(info.keys), ["trace_id", "trace_location", "request_time", "execution_duration", "state",
                                        "trace_metadata", "tags"])
        XCTAssertEqual(info["state"] as? String, "ERROR")
        XCTAssertEqual(info["request_time"] as? String, "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(info["execution_duration"] as? String, "0.000s")
        XCTAssertEqual(info["trace_metadata"] as? [String: String], ["mlflow.trace_schema.version": "3"])
        XCTAssertEqual(info["tags"] as? [String: String], ["mlflow.traceName": "POST /v1/messages"])

        record.requestPreview = "Hello"
        record.responsePreview = String(repeating: "ü", count: 1500)
        info = try traceInfo(record)
        XCTAssertEqual(info["request_preview"] as? String, "Hello")
        XCTAssertEqual((info["response_preview"] as? String)?.count, 1000)
    }

    func testDurationUsesWholeMillisecondsLikeMLflow() {
        func duration(_ start: UInt64, _ end: UInt64) -> String {
            StartTraceV3.executionDuration(TraceRecord(
                traceID: TraceRecordFixtures.traceID, rootSpanID: TraceRecordFixtures.spanID, name: "x",
                startTimeUnixNano: start, endTimeUnixNano: end))
        }
        XCTAssertEqual(duration(1_999_999, 2_000_000), "0.001s")  // 1 ms → 2 ms
        XCTAssertEqual(duration(0, 61_234_000_000), "61.234s")
        XCTAssertEqual(duration(0, 5_000_000), "0.005s")
        XCTAssertEqual(duration(10_000_000, 1), "0.000s")
    }

    func testMetadataKeepsFixedKeysOverRecordMetadataAndCapsValues() throws {
        var record = TraceRecordFixtures.chat()
        record.metadata = [
            "mlflow.trace.user": "spoof", "mlflow.trace_schema.version": "2", "big": String(repeating: "v", count: 9000),
            "": "empty key", "ctl\u{1}": "x",
        ]
        let metadata = try XCTUnwrap(try traceInfo(record)["trace_metadata"] as? [String: String])
        XCTAssertEqual(metadata["mlflow.trace.user"], "u1")
        XCTAssertEqual(metadata["mlflow.trace_schema.version"], "3")
        XCTAssertEqual(metadata["big"]?.count, 8000)
        XCTAssertEqual(Set(metadata.keys), ["mlflow.trace.user", "mlflow.trace.session", "mlflow.trace_schema.version", "big"])
    }

    func testOverlongSessionAndRequestIDAreShortenedEvenUnvalidated() throws {
        var record = TraceRecordFixtures.chat()
        record.session = nil
        record.metadata["mlflow.trace.session"] = String(repeating: "s", count: 400)
        record.clientRequestID = String(repeating: "r", count: 80)
        let info = try traceInfo(record)
        XCTAssertEqual((info["trace_metadata"] as? [String: String])?["mlflow.trace.session"]?.count, 250)
        XCTAssertEqual((info["client_request_id"] as? String)?.count, 50)
    }

    func testHostileStringsSurviveARoundTrip() throws {
        let text = "q\" b\\ n\n nul\u{0} 👩‍👩‍👧 \u{202E}rtl"
        var record = TraceRecordFixtures.chat()
        record.user = text
        record.clientRequestID = text
        record.requestPreview = text
        record.metadata = ["note": text]
        record.tags = ["note": text]
        let info = try traceInfo(record, experimentID: text)
        XCTAssertEqual(info["client_request_id"] as? String, text)
        XCTAssertEqual(info["request_preview"] as? String, text)
        XCTAssertEqual((info["trace_metadata"] as? [String: String])?["mlflow.trace.user"], text)
        XCTAssertEqual((info["trace_metadata"] as? [String: String])?["note"], text)
        XCTAssertEqual((info["tags"] as? [String: String])?["note"], text)
        XCTAssertEqual(((info["trace_location"] as? [String: Any])?["mlflow_experiment"] as? [String: Any])?["experiment_id"] as? String, text)
    }

    // MARK: responseConfirms

    private func echo(traceID: String = "tr-c79367d3709dc94f10a95dc27a1659b2", state: String = "OK",
                      requestTime: String? = "2026-11-24T23:38:07.174Z") -> [UInt8] {
        var info: [String: Any] = ["trace_id": traceID, "state": state, "execution_duration": "1.250s",
                                   "trace_metadata": ["mlflow.trace.user": "u1"]]
        if let requestTime { info["request_time"] = requestTime }
        return [UInt8](try! JSONSerialization.data(withJSONObject: ["trace": ["trace_info": info]]))
    }

    func testResponseConfirmsAMatchingEcho() {
        let record = TraceRecordFixtures.chat()
        XCTAssertTrue(StartTraceV3.responseConfirms(echo(), record: record))
        XCTAssertTrue(StartTraceV3.responseConfirms(echo(requestTime: "2026-11-24T23:38:07.174000Z"), record: record))
        XCTAssertTrue(StartTraceV3.responseConfirms(echo(requestTime: "2026-11-25T00:38:07.174+01:00"), record: record))
        var error = record
        error.status = .error(message: "boom")
        XCTAssertTrue(StartTraceV3.responseConfirms(echo(state: "ERROR"), record: error))
    }

    func testResponseConfirmsAcceptsWholeSecondsWrittenWithoutFraction() {
        var record = TraceRecordFixtures.chat()
        record.startTimeUnixNano = 1_795_563_487_000_000_000
        XCTAssertTrue(StartTraceV3.responseConfirms(echo(requestTime: "2026-11-24T23:38:07Z"), record: record))
    }

    func testResponseConfirmsRejectsMismatchesAndGarbage() {
        let record = TraceRecordFixtures.chat()
        // The reference's pitfall: a half-parsed body comes back as 1970 / STATE_UNSPECIFIED.
        XCTAssertFalse(StartTraceV3.responseConfirms(
            echo(state: "STATE_UNSPECIFIED", requestTime: "1970-01-01T00:00:00Z"), record: record))
        XCTAssertFalse(StartTraceV3.responseConfirms(echo(state: "STATE_UNSPECIFIED"), record: record))
        XCTAssertFalse(StartTraceV3.responseConfirms(echo(state: "ERROR"), record: record))
        XCTAssertFalse(StartTraceV3.responseConfirms(echo(requestTime: "2026-11-24T23:38:07.175Z"), record: record))
        XCTAssertFalse(StartTraceV3.responseConfirms(echo(requestTime: nil), record: record))
        XCTAssertFalse(StartTraceV3.responseConfirms(echo(traceID: "tr-00000000000000000000000000000001"), record: record))
        XCTAssertFalse(StartTraceV3.responseConfirms([], record: record))
        XCTAssertFalse(StartTraceV3.responseConfirms(Array("not json".utf8), record: record))
        XCTAssertFalse(StartTraceV3.responseConfirms(Array(#"{"trace":{}}"#.utf8), record: record))
        XCTAssertFalse(StartTraceV3.responseConfirms(Array("[1]".utf8), record: record))
    }
}

final class TraceTimestampTests: XCTestCase {
    func testFormatsKnownInstants() {
        XCTAssertEqual(TraceTimestamp.format(unixMillis: 0), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(TraceTimestamp.format(unixMillis: 951_782_400_001), "2000-02-29T00:00:00.001Z")
        XCTAssertEqual(TraceTimestamp.format(unixMillis: 1_795_563_487_174), "2026-11-24T23:38:07.174Z")
        XCTAssertEqual(TraceTimestamp.format(unixMillis: 253_402_300_799_999), "9999-12-31T23:59:59.999Z")
    }

    func testParseInvertsFormatAcrossYears() {
        var generator = SeededGenerator(state: 1)
        for _ in 0..<2000 {
            let millis = generator.next() % 253_402_300_800_000
            XCTAssertEqual(TraceTimestamp.parseMillis(TraceTimestamp.format(unixMillis: millis)), Int64(millis))
        }
    }

    func testParseRejectsMalformedText() {
        for bad in ["", "2026-11-24", "2026-11-24T23:38:07", "2026-11-24T23:38:07.Z", "2026-13-24T23:38:07Z",
                    "2026-11-24T23:38:07.174", "2026-11-24T23:38:07.174Zjunk", "2026/11/24T23:38:07Z", "1795563487174"] {
            XCTAssertNil(TraceTimestamp.parseMillis(bad), bad)
        }
    }
}

final class TraceRecordCodableTests: XCTestCase {
    func testRecordRoundTripsThroughJSON() throws {
        var record = TraceRecordFixtures.chat()
        record.startTimeUnixNano = UInt64.max - 1
        record.status = .error(message: "nul\u{0} \"q\"")
        record.attributes["d"] = .double(.infinity)
        record.attributes["b"] = .bool(true)
        record.attributes["i"] = .int(.min)
        record.attributes["x"] = .double(0.1)
        record.requestPreview = "hi"
        record.events = [.exception(type: "T", message: "m", timeUnixNano: 5)]
        let data = try JSONEncoder().encode(record)
        let decoded = try JSONDecoder().decode(TraceRecord.self, from: data)
        XCTAssertEqual(decoded, record)
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertTrue(text.contains(#""traceID":"c79367d3709dc94f10a95dc27a1659b2""#), text)
        XCTAssertTrue(text.contains(#""spanType":"CHAT_MODEL""#), text)
    }

    func testNaNRoundTripsAsAString() throws {
        let data = try JSONEncoder().encode([AttributeValue.double(.nan)])
        XCTAssertEqual(String(decoding: data, as: UTF8.self), #"[{"double":"NaN"}]"#)
        let back = try JSONDecoder().decode([AttributeValue].self, from: data)
        guard case .double(let value) = back[0] else { return XCTFail("\(back)") }
        XCTAssertTrue(value.isNaN)
    }

    func testUnknownStatusIsRejected() {
        XCTAssertThrowsError(try JSONDecoder().decode(TraceRecord.Status.self, from: Data(#"{"code":"maybe"}"#.utf8)))
    }
}
