import Foundation
import XCTest

@testable import TracegateTrace

/// The span tree (root + upstream span), the Source column, client retries and trace names.
final class UpstreamSpanTests: XCTestCase {
    private let start: Int64 = 1_700_000_000_000_000_000

    private func chatExchange(
        stream: Bool = false, sentAfter: Int64? = 3_000_000, chunks: [String] = [], arrivals: [Int64] = [],
        last: Int64? = nil, route: Int = 0, retries: Int? = nil, model: String = "gpt-4o-mini"
    ) -> CapturedExchange {
        let request = #"{"model":"\#(model)","messages":[{"role":"user","content":"hi"}]\#(stream ? #","stream":true"# : "")}"#
        let responseText =
            stream
            ? chunks.joined()
            : #"{"id":"c1","object":"chat.completion","model":"\#(model)","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#
        var ends: [Int] = []
        var size = 0
        for chunk in chunks {
            size += chunk.utf8.count
            ends.append(size)
        }
        return CapturedExchange(
            traceIDHigh: 1, traceIDLow: 2, rootSpanID: 0x42, method: "POST", target: "/v1/chat/completions",
            upstream: "http://backend:8000", requestID: "r", requestIDWasGenerated: false,
            headerTags: [],
            request: .init(bytes: Array(request.utf8), totalSize: request.utf8.count, contentType: "application/json"),
            response: .init(
                bytes: Array(responseText.utf8), totalSize: responseText.utf8.count,
                contentType: stream ? "text/event-stream" : "application/json"),
            status: 200, startEpochNanos: start, durationNanos: 900_000_000, timeToFirstByteNanos: 100_000_000,
            timeToFirstEventNanos: arrivals.first, outcome: .completed, routeIndex: route, upstreamSentNanos: sentAfter,
            chunkArrivals: zip(ends, arrivals).map { CapturedExchange.ChunkArrival(byteEnd: $0, nanos: $1) },
            lastResponseBytesNanos: last, clientRetryCount: retries)
    }

    private func event(_ delta: String) -> String {
        #"data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":\#(delta),"finish_reason":null}]}"# + "\n\n"
    }

    // MARK: The upstream span

    func testAChatCallGetsAnLLMSpanFromSendingUpstreamToTheEndCarryingModelAndUsage() throws {
        let record = TraceBuilder().record(for: chatExchange())
        let span = try XCTUnwrap(record.upstreamSpan)
        XCTAssertEqual(span.name, "POST /v1/chat/completions")
        XCTAssertEqual(span.spanType, .llm)
        XCTAssertEqual(span.startTimeUnixNano, UInt64(start) + 3_000_000)
        XCTAssertEqual(span.endTimeUnixNano, record.endTimeUnixNano)
        XCTAssertEqual(span.status, .ok)
        XCTAssertEqual(span.attributes[TraceAttributeKey.model], .string("gpt-4o-mini"))
        XCTAssertEqual(span.attributes[TraceAttributeKey.tokenUsage], TraceAttributeKey.tokenUsage(inputTokens: 3, outputTokens: 1))
        XCTAssertEqual(span.attributes["gen_ai.usage.input_tokens"], .int(3))
        XCTAssertEqual(span.attributes[TraceAttributeKey.httpResponseStatusCode], .int(200))
        XCTAssertEqual(span.attributes[TraceAttributeKey.messageFormat], .string("openai"))
        XCTAssertNotEqual(span.spanID, record.rootSpanID)
        // The root keeps the exchange as the client saw it; usage is counted on one span only.
        XCTAssertEqual(record.spanType, .chatModel)
        XCTAssertEqual(record.attributes[TraceAttributeKey.messageFormat], .string("openai"))
        for key in TraceBuilder.modelAttributeKeys { XCTAssertNil(record.attributes[key], key) }
        XCTAssertNotNil(record.outputs)
    }

    func testAPlainRequestGetsAnUnknownUpstreamSpanAndOneNeverSentGetsNone() throws {
        var exchange = chatExchange()
        exchange.target = "/v1/things"
        let plain = TraceBuilder().record(for: exchange)
        XCTAssertEqual(plain.upstreamSpan?.spanType, .unknown)
        XCTAssertEqual(plain.upstreamSpan?.name, "POST /v1/things")

        let unsent = TraceBuilder().record(for: chatExchange(sentAfter: nil))
        XCTAssertNil(unsent.upstreamSpan)
        XCTAssertEqual(unsent.attributes[TraceAttributeKey.model], .string("gpt-4o-mini"), "without an LLM span the root keeps the model")
    }

    func testAFailedUpstreamCallIsAnErrorSpanToo() {
        var exchange = chatExchange()
        exchange.status = 500
        let record = TraceBuilder().record(for: exchange)
        XCTAssertEqual(record.upstreamSpan?.status, .error(message: "HTTP 500"))
    }

    func testTheSpanIDIsStableNonZeroAndNotTheRoots() {
        for value: UInt64 in [1, 0x42, .max, 0x9E37_79B9_7F4A_7C15 &* 3] {
            let root = SpanID(value: value)
            let child = UpstreamSpan.spanID(under: root)
            XCTAssertEqual(child, UpstreamSpan.spanID(under: root))
            XCTAssertNotEqual(child.value, 0)
            XCTAssertNotEqual(child, root)
        }
        XCTAssertNotEqual(UpstreamSpan.spanID(under: SpanID(value: 1)), UpstreamSpan.spanID(under: SpanID(value: 2)))
    }

    // MARK: Streams

    func testAStreamsFirstTokenIsThePieceThatBroughtTheFirstTextAndTheEndIsTheLastBytes() throws {
        let chunks = [event(#"{"role":"assistant","content":""}"#), event(#"{"content":"Hel"}"#), event(#"{"content":"lo"}"#), "data: [DONE]\n\n"]
        let record = TraceBuilder().record(
            for: chatExchange(stream: true, chunks: chunks, arrivals: [100_000_000, 160_000_000, 220_000_000, 280_000_000], last: 280_000_000))
        let span = try XCTUnwrap(record.upstreamSpan)
        XCTAssertEqual(span.events.map(\.name), ["first_token", "end_of_stream"])
        XCTAssertEqual(span.events[0].timeUnixNano, UInt64(start) + 160_000_000, "the role-only chunk is not a token")
        XCTAssertEqual(span.events[1].timeUnixNano, UInt64(start) + 280_000_000)
        XCTAssertEqual(span.events[1].attributes["tracegate.stream.completed"], .bool(true))
        XCTAssertEqual(span.attributes["tracegate.time_to_first_token_ms"], .double(160))
        XCTAssertEqual(record.outputs.map { $0.contains(#""content":"Hello""#) }, true, "the stream is still assembled whole")
    }

    func testEventTimesStayInsideTheSpanWhenTheClocksDisagree() throws {
        // The tap saw the last bytes 0.1 ms after the exchange's end (durationNanos 900 ms).
        let chunks = [event(#"{"content":"Hi"}"#), "data: [DONE]\n\n"]
        let record = TraceBuilder().record(
            for: chatExchange(stream: true, chunks: chunks, arrivals: [1_000_000, 900_100_000], last: 900_100_000))
        let span = try XCTUnwrap(record.upstreamSpan)
        XCTAssertEqual(span.events.map(\.timeUnixNano), [span.startTimeUnixNano, record.endTimeUnixNano])
    }

    func testAFirstTokenBeyondTheRecordedPiecesGivesNoFirstTokenEvent() throws {
        let chunks = [event(#"{"role":"assistant","content":""}"#) + event(#"{"content":""}"#), event(#"{"content":"late"}"#), "data: [DONE]\n\n"]
        let record = TraceBuilder().record(
            for: chatExchange(stream: true, chunks: chunks, arrivals: [100_000_000], last: 300_000_000))
        XCTAssertEqual(record.upstreamSpan?.events.map(\.name), ["end_of_stream"])
        XCTAssertTrue(record.outputs?.contains("late") ?? false)
    }

    func testReadingAStreamInPiecesUnderstandsItExactlyAsReadingItWhole() throws {
        let chunks = [event(#"{"role":"assistant"}"#), event(#"{"content":"a"}"#), event(#"{"content":"b"}"#), "data: [DONE]\n\n"]
        let body = Array(chunks.joined().utf8)
        let request = Array(#"{"model":"m","messages":[{"role":"user","content":"q"}],"stream":true}"#.utf8)
        let whole = ChatPayloadInterpreter.interpret(
            path: "/v1/chat/completions", requestBody: request, responseBody: body, responseContentType: "text/event-stream",
            responseTruncated: false)
        // Piece boundaries anywhere, including inside an event and past the end.
        for ends in [[1], [10, 200], [chunks[0].utf8.count + 5, body.count - 3], [body.count + 100]] {
            var pieced = try XCTUnwrap(ChatPayloadInterpreter.interpret(
                path: "/v1/chat/completions", requestBody: request, responseBody: body, responseContentType: "text/event-stream",
                responseTruncated: false, pieceEnds: ends))
            pieced.firstOutputPiece = nil
            XCTAssertEqual(pieced, whole, "\(ends)")
        }
        let ends = chunks.reduce(into: [Int]()) { $0.append(($0.last ?? 0) + $1.utf8.count) }
        XCTAssertEqual(
            ChatPayloadInterpreter.interpret(
                path: "/v1/chat/completions", requestBody: request, responseBody: body, responseContentType: "text/event-stream",
                responseTruncated: false, pieceEnds: ends)?.firstOutputPiece, 1)
    }

    // MARK: Source, retries, names

    func testTheSourceColumnAndRouteComeFromTheRoutesSource() {
        let builder = TraceBuilder(sources: [
            TraceSource(name: "backend:8000", type: "PROXY"), TraceSource(name: "chat", type: "PROXY", route: "chat"),
        ])
        let routed = builder.record(for: chatExchange(route: 1))
        XCTAssertEqual(routed.metadata["mlflow.source.name"], "chat")
        XCTAssertEqual(routed.metadata["mlflow.source.type"], "PROXY")
        XCTAssertEqual(routed.tags["tracegate.route"], "chat")
        XCTAssertEqual(routed.attributes["tracegate.route"], .string("chat"))
        let plain = builder.record(for: chatExchange(route: 0))
        XCTAssertEqual(plain.metadata["mlflow.source.name"], "backend:8000")
        XCTAssertNil(plain.tags["tracegate.route"])
        XCTAssertNil(TraceBuilder().record(for: chatExchange()).metadata["mlflow.source.name"])
        // Sent with StartTraceV3, the only call that sets metadata.
        let body = String(decoding: StartTraceV3.body(routed, experimentID: "1"), as: UTF8.self)
        XCTAssertTrue(body.contains(#""mlflow.source.name":"chat""#), body)
    }

    func testOnlyRetriesAreTaggedAndEveryAnnouncedCountIsAnAttribute() {
        let builder = TraceBuilder()
        let first = builder.record(for: chatExchange(retries: 0))
        XCTAssertEqual(first.attributes["tracegate.client_retry_count"], .int(0))
        XCTAssertNil(first.tags["tracegate.retry"])
        let second = builder.record(for: chatExchange(retries: 2))
        XCTAssertEqual(second.attributes["tracegate.client_retry_count"], .int(2))
        XCTAssertEqual(second.tags["tracegate.retry"], "2")
        let unannounced = builder.record(for: chatExchange())
        XCTAssertNil(unannounced.attributes["tracegate.client_retry_count"])
        XCTAssertNil(unannounced.tags["tracegate.retry"])
    }

    func testChatTracesAreNamedAfterOperationAndModelUnlessAskedOtherwise() {
        XCTAssertEqual(TraceBuilder().record(for: chatExchange()).name, "chat.completions gpt-4o-mini")
        XCTAssertEqual(TraceBuilder(namesChatByOperation: false).record(for: chatExchange()).name, "POST /v1/chat/completions")
        XCTAssertEqual(TraceBuilder().record(for: chatExchange(model: " ")).name, "chat.completions")
        let long = String(repeating: "m", count: 500)
        XCTAssertEqual(TraceBuilder().record(for: chatExchange(model: long)).name, "chat.completions " + String(repeating: "m", count: 200))
        XCTAssertEqual(TraceBuilder.operationName(ChatExchange(format: .openAIResponses, model: "o3")), "responses o3")
        XCTAssertEqual(TraceBuilder.operationName(ChatExchange(format: .anthropic, model: "claude")), "messages claude")
    }

    // MARK: Encodings

    func testOTLPCarriesTheUpstreamSpanAsAClientChildOfTheRoot() throws {
        let record = TraceBuilder().record(for: chatExchange())
        let json = try parseJSON(OTLPJSON.exportRequest([record], serviceName: "tracegate", resourceAttributes: [:]))
        let resource = try XCTUnwrap((json["resourceSpans"] as? [[String: Any]])?.first)
        let spans = try XCTUnwrap((resource["scopeSpans"] as? [[String: Any]])?.first?["spans"] as? [[String: Any]])
        XCTAssertEqual(spans.count, 2)
        XCTAssertNil(spans[0]["parentSpanId"])
        XCTAssertEqual(spans[0]["kind"] as? Int, 2)
        XCTAssertEqual(spans[1]["parentSpanId"] as? String, record.rootSpanID.hex)
        XCTAssertEqual(spans[1]["spanId"] as? String, record.upstreamSpan?.spanID.hex)
        XCTAssertEqual(spans[1]["traceId"] as? String, record.traceID.hex)
        XCTAssertEqual(spans[1]["kind"] as? Int, 3)
        XCTAssertEqual(spans[1]["name"] as? String, "POST /v1/chat/completions")
        let keys = Set((spans[1]["attributes"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String })
        XCTAssertTrue(keys.isSuperset(of: ["mlflow.spanType", "mlflow.llm.model", "mlflow.chat.tokenUsage"]), "\(keys)")
        XCTAssertFalse(keys.contains("mlflow.spanInputs"), "bodies are stored once, on the root")
        let rootKeys = Set((spans[0]["attributes"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String })
        XCTAssertFalse(rootKeys.contains("mlflow.chat.tokenUsage"))
    }

    func testTheTraceFileLineHoldsTheUpstreamSpanAsCodableDoes() throws {
        let chunks = [event(#"{"content":"x"}"#), "data: [DONE]\n\n"]
        var record = TraceBuilder().record(for: chatExchange(stream: true, chunks: chunks, arrivals: [5, 9], last: 9))
        record.upstreamSpan?.status = .error(message: "cut \"short\"")
        let line = TraceRecordJSON.line(record)
        XCTAssertEqual(try JSONDecoder().decode(TraceRecord.self, from: Data(line.dropLast())), record)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        XCTAssertEqual(
            try JSONSerialization.jsonObject(with: Data(line.dropLast())) as? NSDictionary,
            try JSONSerialization.jsonObject(with: encoder.encode(record)) as? NSDictionary)
    }

    func testALineWrittenBeforeUpstreamSpansStillReads() throws {
        var record = TraceRecordFixtures.chat()
        record.upstreamSpan = nil
        let line = TraceRecordJSON.line(record)
        XCTAssertFalse(String(decoding: line, as: UTF8.self).contains("upstreamSpan"))
        XCTAssertNil(try JSONDecoder().decode(TraceRecord.self, from: Data(line.dropLast())).upstreamSpan)
    }
}
