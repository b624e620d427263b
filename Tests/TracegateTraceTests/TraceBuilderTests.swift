import XCTest

@testable import TracegateTrace

final class TraceBuilderTests: XCTestCase {
    private func exchange(
        method: String = "POST", target: String = "/v1/things?x=1", status: Int? = 200,
        request: CapturedExchange.Body = .init(), response: CapturedExchange.Body = .init(),
        user: String? = "u1", session: String? = "s1", requestID: String = "req-1",
        outcome: CapturedExchange.Outcome = .completed
    ) -> CapturedExchange {
        CapturedExchange(
            traceIDHigh: 0x0123_4567_89ab_cdef, traceIDLow: 0xfedc_ba98_7654_3210, rootSpanID: 42, method: method,
            target: target, upstream: "http://backend:8000", userHeadValues: [user], sessionHeadValues: [session], requestID: requestID,
            requestIDWasGenerated: false, headerTags: [("tenant", "acme")], request: request, response: response,
            status: status, startEpochNanos: 1_700_000_000_000_000_000, durationNanos: 250_000_000,
            timeToFirstByteNanos: 200_000_000, timeToFirstEventNanos: nil, outcome: outcome)
    }

    private func body(_ text: String, type: String? = "application/json", total: Int? = nil) -> CapturedExchange.Body {
        CapturedExchange.Body(bytes: Array(text.utf8), totalSize: total ?? text.utf8.count, contentType: type)
    }

    func testGenericExchangeBecomesATraceNamedAfterTheRequest() {
        let record = TraceBuilder(staticTags: [("environment", "test")]).record(
            for: exchange(request: body(#"{"a":1}"#), response: body(#"{"b":2}"#)))
        XCTAssertEqual(record.name, "POST /v1/things")
        XCTAssertEqual(record.traceID.mlflowID, "tr-0123456789abcdeffedcba9876543210")
        XCTAssertEqual(record.rootSpanID.value, 42)
        XCTAssertEqual(record.inputs, #"{"a":1}"#)
        XCTAssertEqual(record.outputs, #"{"b":2}"#)
        XCTAssertEqual(record.spanType, .unknown)
        XCTAssertEqual(record.status, .ok)
        XCTAssertEqual(record.endTimeUnixNano - record.startTimeUnixNano, 250_000_000)
        XCTAssertEqual(record.user, "u1")
        XCTAssertEqual(record.session, "s1")
        XCTAssertEqual(record.clientRequestID, "req-1")
        XCTAssertEqual(record.tags["environment"], "test")
        XCTAssertEqual(record.tags["tenant"], "acme")
        XCTAssertEqual(record.attributes[TraceAttributeKey.httpResponseStatusCode], .int(200))
        XCTAssertEqual(record.attributes[TraceAttributeKey.urlPath], .string("/v1/things?x=1"))
    }

    func testARoutesTagsWinOverOtherTagsOnItsTracesOnly() {
        let builder = TraceBuilder(staticTags: [("environment", "test")], routeTags: [[], [("environment", "staging"), ("team", "chat")]])
        var routed = exchange()
        routed.routeIndex = 1
        XCTAssertEqual(builder.record(for: routed).tags["environment"], "staging")
        XCTAssertEqual(builder.record(for: routed).tags["team"], "chat")
        XCTAssertEqual(builder.record(for: exchange()).tags["environment"], "test")
        XCTAssertNil(builder.record(for: exchange()).tags["team"])
        routed.routeIndex = 7
        XCTAssertEqual(builder.record(for: routed).tags["environment"], "test", "a route without tags of its own")
    }

    func testServerErrorsUpstreamFailuresAndAbortsAreErrors() {
        let builder = TraceBuilder()
        XCTAssertEqual(builder.record(for: exchange(status: 503)).status, .error(message: "HTTP 503"))
        XCTAssertEqual(builder.record(for: exchange(status: 404)).status, .ok)
        XCTAssertEqual(TraceBuilder(errorOn4xx: true).record(for: exchange(status: 404)).status, .error(message: "HTTP 404"))
        let failed = builder.record(for: exchange(status: 502, outcome: .upstreamFailed("upstream unreachable: connection refused")))
        XCTAssertEqual(failed.status, .error(message: "upstream unreachable: connection refused"))
        XCTAssertEqual(failed.events.first?.name, "exception")
        let aborted = builder.record(for: exchange(status: 200, outcome: .clientAborted))
        guard case .error(let message) = aborted.status else { return XCTFail("an aborted exchange is an error") }
        XCTAssertTrue(message.contains("client"), message)
    }

    func testEveryErrorTraceCarriesAnExceptionEvent() {
        let builder = TraceBuilder(errorOn4xx: true)
        let cases: [(Int, CapturedExchange.Outcome)] = [
            (500, .completed), (503, .completed), (404, .completed), (400, .rejected("malformed request: bad")),
            (502, .upstreamFailed("upstream unreachable")), (504, .upstreamTimeout("first byte")), (200, .clientAborted),
        ]
        for (status, outcome) in cases {
            let record = builder.record(for: exchange(status: status, outcome: outcome))
            guard case .error = record.status else { XCTFail("\(status) \(outcome) is not an error"); continue }
            XCTAssertEqual(record.events.filter { $0.name == "exception" }.count, 1, "\(status) \(outcome)")
        }
        XCTAssertTrue(builder.record(for: exchange(status: 200)).events.isEmpty, "a success has no exception event")
        let upstream500 = builder.record(for: exchange(status: 500))
        XCTAssertEqual(upstream500.status, .error(message: "HTTP 500"))
        XCTAssertEqual(upstream500.events.first?.attributes["exception.type"], .string("HTTPError"))
    }

    func testTruncatedBodiesAreMarkedWithTheirRealSize() {
        let record = TraceBuilder().record(for: exchange(response: body("hello", type: "text/plain", total: 5_000_000)))
        XCTAssertEqual(record.attributes["tracegate.response.truncated"], .bool(true))
        XCTAssertEqual(record.attributes["tracegate.response.bytes"], .int(5_000_000))
        XCTAssertTrue(record.outputs?.hasPrefix("hello") ?? false)
        XCTAssertTrue(record.outputs?.contains("5000000 bytes") ?? false, record.outputs ?? "")
    }

    func testBinaryAndCompressedBodiesBecomeSizeNotes() throws {
        let binary = CapturedExchange.Body(bytes: [0xff, 0xfe, 0x00, 0x81], totalSize: 4, contentType: "application/octet-stream")
        var gzip = body("\u{1f}\u{8b}...", type: "application/json")
        gzip.contentEncoding = "gzip"
        let record = TraceBuilder().record(for: exchange(request: binary, response: gzip))
        let input = try JSONSerialization.jsonObject(with: Data((record.inputs ?? "").utf8)) as? [String: Any]
        XCTAssertEqual(input?["binary"] as? Bool, true)
        XCTAssertEqual(input?["size"] as? Int, 4)
        let output = try JSONSerialization.jsonObject(with: Data((record.outputs ?? "").utf8)) as? [String: Any]
        XCTAssertEqual(output?["compressed"] as? String, "gzip")
    }

    func testAbsentHeadersGiveAbsentValuesAndBadOnesAreDropped() {
        let record = TraceBuilder().record(for: exchange(user: nil, session: "bad\u{0}session"))
        XCTAssertNil(record.user)
        XCTAssertNil(record.session)
        XCTAssertNotNil(record.attributes["tracegate.warnings"])
    }

    func testLongRequestIDsAreKeptInATag() {
        let long = String(repeating: "r", count: 80)
        let record = TraceBuilder().record(for: exchange(requestID: long))
        XCTAssertLessThanOrEqual(record.clientRequestID?.count ?? 0, 50)
        XCTAssertEqual(record.tags[IdentityValues.requestIDFullTag], long)
    }
}

import Foundation

final class TraceBuilderStreamEndTests: XCTestCase {
    private func streamed(_ sse: String) -> CapturedExchange {
        let request = #"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
        return CapturedExchange(
            traceIDHigh: 1, traceIDLow: 2, rootSpanID: 3, method: "POST", target: "/v1/chat/completions", upstream: "",
            requestID: "r", requestIDWasGenerated: true, headerTags: [],
            request: .init(bytes: Array(request.utf8), totalSize: request.utf8.count, contentType: "application/json"),
            response: .init(bytes: Array(sse.utf8), totalSize: sse.utf8.count, contentType: "text/event-stream"),
            status: 200, startEpochNanos: 1, durationNanos: 1, timeToFirstByteNanos: nil, timeToFirstEventNanos: nil,
            outcome: .clientAborted)
    }

    private let chunk = #"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"finish_reason":null}]}"#

    func testClientClosingAfterDoneIsACompletedStream() {
        let record = TraceBuilder().record(for: streamed(chunk + "\n\ndata: [DONE]\n\n"))
        XCTAssertEqual(record.status, .ok)
        XCTAssertEqual(record.attributes["tracegate.client_closed_after_stream_end"], .bool(true))
    }

    func testClientClosingMidStreamIsAnAbort() {
        let record = TraceBuilder().record(for: streamed(chunk + "\n\n"))
        guard case .error = record.status else { return XCTFail("a stream cut before its end is an abort") }
    }
}
