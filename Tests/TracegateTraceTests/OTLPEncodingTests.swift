import Foundation
import XCTest
@testable import TracegateTrace

final class OTLPEncodingTests: XCTestCase {
    private func spans(_ json: [String: Any]) throws -> [[String: Any]] {
        let resourceSpans = try XCTUnwrap(json["resourceSpans"] as? [[String: Any]])
        XCTAssertEqual(resourceSpans.count, 1)
        let scopeSpans = try XCTUnwrap(resourceSpans[0]["scopeSpans"] as? [[String: Any]])
        XCTAssertEqual(scopeSpans.count, 1)
        return try XCTUnwrap(scopeSpans[0]["spans"] as? [[String: Any]])
    }

    /// attribute key → the single `{"…Value": x}` object.
    private func attributes(_ object: [String: Any]) throws -> [String: [String: Any]] {
        let list = try XCTUnwrap(object["attributes"] as? [[String: Any]])
        var result: [String: [String: Any]] = [:]
        for item in list {
            let key = try XCTUnwrap(item["key"] as? String)
            XCTAssertNil(result[key], "duplicate attribute \(key)")
            result[key] = try XCTUnwrap(item["value"] as? [String: Any])
            XCTAssertEqual(result[key]?.count, 1)
        }
        return result
    }

    func testChatRecordHasTheReferenceStructure() throws {
        let body = OTLPJSON.exportRequest(
            [TraceRecordFixtures.chat()], serviceName: "tracegate", resourceAttributes: ["deployment.environment": "prod"])
        let json = try parseJSON(body)
        XCTAssertEqual(Set(json.keys), ["resourceSpans"])
        let resource = try XCTUnwrap((json["resourceSpans"] as? [[String: Any]])?.first?["resource"] as? [String: Any])
        let resourceAttributes = try attributes(resource)
        XCTAssertEqual(resourceAttributes["service.name"]?["stringValue"] as? String, "tracegate")
        XCTAssertEqual(resourceAttributes["deployment.environment"]?["stringValue"] as? String, "prod")
        let scope = try XCTUnwrap((json["resourceSpans"] as? [[String: Any]])?.first?["scopeSpans"] as? [[String: Any]])
        XCTAssertEqual((scope.first?["scope"] as? [String: Any])?["name"] as? String, "tracegate")

        let span = try XCTUnwrap(spans(json).first)
        XCTAssertEqual(Set(span.keys), ["traceId", "spanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano",
                                        "attributes", "status"])
        XCTAssertEqual(span["traceId"] as? String, "c79367d3709dc94f10a95dc27a1659b2")
        XCTAssertEqual(span["spanId"] as? String, "a1b2c3d4e5f60718")
        XCTAssertEqual(span["name"] as? String, "POST /v1/chat/completions")
        XCTAssertEqual(span["kind"] as? Int, 2)
        XCTAssertEqual(span["startTimeUnixNano"] as? String, "1795563487174052728")
        XCTAssertEqual(span["endTimeUnixNano"] as? String, "1795563488424052728")
        XCTAssertEqual((span["status"] as? [String: Any])?["code"] as? Int, 1)
        XCTAssertNil((span["status"] as? [String: Any])?["message"])

        let attrs = try attributes(span)
        XCTAssertEqual(Set(attrs.keys), [
            "mlflow.spanType", "mlflow.spanInputs", "mlflow.spanOutputs", "mlflow.chat.tokenUsage",
            "mlflow.message.format", "mlflow.llm.model", "user.id", "session.id", "http.response.status_code",
            "mlflow.traceTag.mlflow.traceName", "mlflow.traceTag.proxy.backend",
        ])
        XCTAssertEqual(attrs["mlflow.spanType"]?["stringValue"] as? String, "CHAT_MODEL")
        XCTAssertEqual(attrs["mlflow.spanInputs"]?["stringValue"] as? String, TraceRecordFixtures.chat().inputs)
        XCTAssertEqual(attrs["mlflow.spanOutputs"]?["stringValue"] as? String, TraceRecordFixtures.chat().outputs)
        XCTAssertEqual(attrs["mlflow.chat.tokenUsage"]?["stringValue"] as? String,
                       #"{"input_tokens":12,"output_tokens":7,"total_tokens":19}"#)
        XCTAssertEqual(attrs["user.id"]?["stringValue"] as? String, "u1")
        XCTAssertEqual(attrs["session.id"]?["stringValue"] as? String, "sess-42")
        XCTAssertEqual(attrs["http.response.status_code"]?["intValue"] as? String, "200")
        XCTAssertEqual(attrs["mlflow.traceTag.mlflow.traceName"]?["stringValue"] as? String, "chat.completions")
        XCTAssertEqual(attrs["mlflow.traceTag.proxy.backend"]?["stringValue"] as? String, "backend-a")
    }

    func testACallersSpanIsTheParentOnlyWhenAsked() throws {
        var record = TraceRecordFixtures.chat()
        record.parentSpanID = SpanID(value: 0x00f0_0000_0000_0abc)
        for linked in [false, true] {
            let body = OTLPJSON.exportRequest([record], serviceName: "t", resourceAttributes: [:], linksParents: linked)
            let span = try XCTUnwrap(spans(try parseJSON(body)).first)
            XCTAssertEqual(span["parentSpanId"] as? String, linked ? "00f0000000000abc" : nil)
            XCTAssertEqual(try attributes(span)["tracegate.parent_span_id"]?["stringValue"] as? String, "00f0000000000abc")
        }
    }

    func testAttributeOrderIsDeterministic() {
        var record = TraceRecordFixtures.chat()
        for i in 0..<20 { record.attributes["k\(i)"] = .int(Int64(i)) }
        let first = OTLPJSON.exportRequest([record], serviceName: "s", resourceAttributes: ["b": "2", "a": "1"])
        for _ in 0..<5 {
            XCTAssertEqual(OTLPJSON.exportRequest([record], serviceName: "s", resourceAttributes: ["a": "1", "b": "2"]), first)
        }
    }

    func testErrorRecordCarriesStatusMessageAndExceptionEvent() throws {
        var record = TraceRecordFixtures.chat()
        record.status = .error(message: "upstream refused: connection reset")
        record.events = [.exception(type: "UpstreamError", message: "connection reset", timeUnixNano: 1_795_563_488_000_000_000)]
        let span = try XCTUnwrap(spans(try parseJSON(OTLPJSON.exportRequest([record], serviceName: "s", resourceAttributes: [:]))).first)
        let status = try XCTUnwrap(span["status"] as? [String: Any])
        XCTAssertEqual(status["code"] as? Int, 2)
        XCTAssertEqual(status["message"] as? String, "upstream refused: connection reset")
        let events = try XCTUnwrap(span["events"] as? [[String: Any]])
        XCTAssertEqual(events.count, 1)
        XCTAssertEqual(events[0]["name"] as? String, "exception")
        XCTAssertEqual(events[0]["timeUnixNano"] as? String, "1795563488000000000")
        let eventAttrs = try attributes(events[0])
        XCTAssertEqual(eventAttrs["exception.type"]?["stringValue"] as? String, "UpstreamError")
        XCTAssertEqual(eventAttrs["exception.message"]?["stringValue"] as? String, "connection reset")
    }

    func testAllAttributeKindsAreEncoded() throws {
        var record = TraceRecordFixtures.chat()
        record.attributes = [
            "s": .string("x"), "i": .int(-9_223_372_036_854_775_808), "d": .double(0.25), "tiny": .double(1e-300),
            "t": .bool(true), "f": .bool(false), "nan": .double(.nan), "inf": .double(-.infinity),
        ]
        let attrs = try attributes(try XCTUnwrap(spans(try parseJSON(
            OTLPJSON.exportRequest([record], serviceName: "s", resourceAttributes: [:]))).first))
        XCTAssertEqual(attrs["s"]?["stringValue"] as? String, "x")
        XCTAssertEqual(attrs["i"]?["intValue"] as? String, "-9223372036854775808")
        XCTAssertEqual(attrs["d"]?["doubleValue"] as? Double, 0.25)
        XCTAssertEqual(attrs["tiny"]?["doubleValue"] as? Double, 1e-300)
        XCTAssertEqual(attrs["t"]?["boolValue"] as? Bool, true)
        XCTAssertEqual(attrs["f"]?["boolValue"] as? Bool, false)
        XCTAssertEqual(attrs["nan"]?["doubleValue"] as? String, "NaN")
        XCTAssertEqual(attrs["inf"]?["doubleValue"] as? String, "-Infinity")
    }

    func testOptionalFieldsAreLeftOutWhenAbsent() throws {
        let record = TraceRecord(
            traceID: TraceRecordFixtures.traceID, rootSpanID: TraceRecordFixtures.spanID, name: "GET /v1/models",
            startTimeUnixNano: 10, endTimeUnixNano: 5)
        let span = try XCTUnwrap(spans(try parseJSON(OTLPJSON.exportRequest([record], serviceName: "s", resourceAttributes: [:]))).first)
        XCTAssertNil(span["events"])
        XCTAssertNil(span["parentSpanId"])
        XCTAssertEqual(span["endTimeUnixNano"] as? String, "10", "an end before the start is clamped")
        XCTAssertEqual(Set(try attributes(span).keys), ["mlflow.spanType", "mlflow.traceTag.mlflow.traceName"])
        XCTAssertEqual(try attributes(span)["mlflow.spanType"]?["stringValue"] as? String, "UNKNOWN")
    }

    func testTraceNameDefaultsToTheSpanNameCappedAt4096() throws {
        var record = TraceRecordFixtures.chat()
        record.tags = [:]
        record.name = "POST /v1/chat/completions"
        var attrs = try attributes(try XCTUnwrap(spans(try parseJSON(
            OTLPJSON.exportRequest([record], serviceName: "s", resourceAttributes: [:]))).first))
        XCTAssertEqual(attrs["mlflow.traceTag.mlflow.traceName"]?["stringValue"] as? String, "POST /v1/chat/completions")

        record.name = String(repeating: "n", count: 5000)
        attrs = try attributes(try XCTUnwrap(spans(try parseJSON(
            OTLPJSON.exportRequest([record], serviceName: "s", resourceAttributes: [:]))).first))
        XCTAssertEqual((attrs["mlflow.traceTag.mlflow.traceName"]?["stringValue"] as? String)?.count, 4096)
    }

    func testReservedAttributesAndTagsCannotBeSmuggledIn() throws {
        var record = TraceRecordFixtures.chat()
        record.attributes["mlflow.spanInputs"] = .string("other")
        record.attributes["user.id"] = .string("mallory")
        record.attributes["gen_ai.conversation.id"] = .string(String(repeating: "g", count: 300))
        record.attributes["mlflow.traceTag.mlflow.trace.spansLocation"] = .string("ARTIFACT_REPO")
        record.attributes["mlflow.traceRequestId"] = .string("tr-other")
        record.tags["mlflow.trace.spansLocation"] = "ARTIFACT_REPO"
        record.tags["mlflow.artifactLocation"] = "/tmp"
        record.tags["bad/../key"] = "x"
        let attrs = try attributes(try XCTUnwrap(spans(try parseJSON(
            OTLPJSON.exportRequest([record], serviceName: "s", resourceAttributes: [:]))).first))
        XCTAssertEqual(attrs["mlflow.spanInputs"]?["stringValue"] as? String, record.inputs)
        XCTAssertEqual(attrs["user.id"]?["stringValue"] as? String, "u1")
        XCTAssertNil(attrs["gen_ai.conversation.id"])
        XCTAssertNil(attrs["mlflow.traceRequestId"])
        XCTAssertEqual(attrs.keys.filter { $0.hasPrefix("mlflow.traceTag.") }.sorted(),
                       ["mlflow.traceTag.mlflow.traceName", "mlflow.traceTag.proxy.backend"])
    }

    func testOverlongSessionIsShortenedEvenIfTheCallerSkippedValidation() throws {
        var record = TraceRecordFixtures.chat()
        record.session = String(repeating: "s", count: 10_000)
        let attrs = try attributes(try XCTUnwrap(spans(try parseJSON(
            OTLPJSON.exportRequest([record], serviceName: "s", resourceAttributes: [:]))).first))
        XCTAssertEqual((attrs["session.id"]?["stringValue"] as? String)?.unicodeScalars.count, 250)
    }

    func testBatchHoldsEverySpanInOrder() throws {
        var generator = SeededGenerator(state: 7)
        var records: [TraceRecord] = []
        for i in 0..<50 {
            var record = TraceRecordFixtures.chat()
            record.traceID = .random(using: &generator)
            record.rootSpanID = .random(using: &generator)
            record.name = "exchange \(i)"
            records.append(record)
        }
        let all = try spans(try parseJSON(OTLPJSON.exportRequest(records, serviceName: "s", resourceAttributes: [:])))
        XCTAssertEqual(all.map { $0["traceId"] as? String }, records.map(\.traceID.hex))
        XCTAssertEqual(all.map { $0["name"] as? String }, records.map(\.name))
    }

    func testHostileStringsSurviveARoundTrip() throws {
        let hostile = [
            #"quote " backslash \ slash / \u0000 literal"#, "newline\n cr\r tab\t", "nul\u{0} bell\u{7} esc\u{1B} del\u{7F} c1\u{85}",
            "emoji 👩‍👩‍👧 🇫🇷 𝄞", "rtl \u{202E}txet\u{202C} עברית العربية", "line sep \u{2028} para \u{2029}",
            "bom \u{FEFF} zwj \u{200D} noncharacter \u{FFFF}", "</script><!--", "{\"json\":\"in a string\"}", "",
            String(repeating: "\\\"", count: 1000),
        ]
        for text in hostile {
            var record = TraceRecordFixtures.chat()
            record.name = text
            record.inputs = text
            record.outputs = text
            record.user = text
            record.session = text
            record.status = .error(message: text)
            record.attributes = ["k \(text)": .string(text)]
            record.events = [SpanEvent(name: text, timeUnixNano: 1, attributes: [text: .string(text)])]
            let body = OTLPJSON.exportRequest([record], serviceName: text, resourceAttributes: [text: text])
            let span = try XCTUnwrap(spans(try parseJSON(body)).first, text.debugDescription)
            XCTAssertEqual(span["name"] as? String, text)
            XCTAssertEqual((span["status"] as? [String: Any])?["message"] as? String, text)
            let attrs = try attributes(span)
            XCTAssertEqual(attrs["mlflow.spanInputs"]?["stringValue"] as? String, text)
            XCTAssertEqual(attrs["mlflow.spanOutputs"]?["stringValue"] as? String, text)
            XCTAssertEqual(attrs["user.id"]?["stringValue"] as? String, text)
            XCTAssertEqual(attrs["session.id"]?["stringValue"] as? String, MLflowLimits.shortened(text, to: 250))
            XCTAssertEqual(attrs["k \(text)"]?["stringValue"] as? String, text)
            let event = try XCTUnwrap((span["events"] as? [[String: Any]])?.first)
            XCTAssertEqual(event["name"] as? String, text)
            XCTAssertEqual(try attributes(event)[text]?["stringValue"] as? String, text)
        }
    }

    func testControlCharactersAreEscapedNotWrittenRaw() {
        var record = TraceRecordFixtures.chat()
        record.inputs = "a\u{0}b\u{1F}c\nd"
        let body = OTLPJSON.exportRequest([record], serviceName: "s", resourceAttributes: [:])
        XCTAssertFalse(body.contains { $0 < 0x20 })
        XCTAssertTrue(String(decoding: body, as: UTF8.self).contains(#"a\u0000b\u001fc\nd"#))
    }
}
