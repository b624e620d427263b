import XCTest

@testable import TracegateTrace

/// A WebSocket turn as a trace: name, identity, client request id, inputs and outputs, recognised
/// chats, failures, and the same privacy and sampling rules as HTTP traces.
final class WebSocketTurnRecordTests: XCTestCase {
    private func message(_ text: String, fromClient: Bool, at nanos: Int64 = 0) -> WebSocketTurnMessage {
        WebSocketTurnMessage(
            fromClient: fromClient, isText: true, data: Array(text.utf8), atNanos: nanos,
            eventType: WebSocketTurnTracker.eventType(Array(text.utf8)))
    }

    private func turn(
        _ client: [String], _ server: [String], number: Int = 3, kind: WebSocketChatProtocol = .generic,
        ending: WebSocketTurn.Ending = .nextClientMessage
    ) -> WebSocketTurn {
        var turn = WebSocketTurn(number: number, protocolKind: kind, startNanos: 1_000)
        turn.clientMessages = client.map { message($0, fromClient: true, at: 1_000) }
        turn.serverMessages = server.enumerated().map { message($1, fromClient: false, at: 3_000_000 + Int64($0)) }
        turn.clientMessageCount = client.count
        turn.serverMessageCount = server.count
        turn.firstServerMessageNanos = server.isEmpty ? nil : 3_000_000
        turn.endNanos = 5_000_000
        turn.ending = ending
        return turn
    }

    func testATurnTracedForAQuietServerAndTheRestOfItsAnswerSayWhatTheyAre() {
        let answered = TraceBuilder().record(for: capture(turn(["hi"], ["Hel", "lo"], number: 1, ending: .quiet)))
        XCTAssertEqual(answered.attributes["tracegate.websocket.ended_by"], .string("quiet after the answer"))
        XCTAssertNil(answered.attributes["tracegate.websocket.continues_turn"])
        XCTAssertEqual(answered.status, .ok)
        var rest = turn([], [" again"], number: 2, ending: .closed(code: 1000, reason: ""))
        rest.continues = 1
        let record = TraceBuilder().record(for: capture(rest))
        XCTAssertEqual(record.attributes["tracegate.websocket.continues_turn"], .int(1))
        XCTAssertEqual(record.attributes["tracegate.websocket.client_messages"], .int(0))
        XCTAssertEqual(record.outputs, " again")
        XCTAssertEqual(record.status, .ok)
    }

    func testTheFirstTurnRecordsTheServersGreetingBesideItsInputs() {
        var first = turn(["I want a refund"], ["Sure"], number: 1)
        first.greeting = [message("Welcome! Card 4111-1111-1111-1111?", fromClient: false), message(#"{"ask":"order"}"#, fromClient: false)]
        first.greetingMessageCount = 2
        let record = TraceBuilder(redaction: Redaction(patterns: [#"\d{4}-\d{4}-\d{4}-\d{4}"#])).record(for: capture(first))
        XCTAssertEqual(record.inputs, "I want a refund", "the inputs stay the client's message")
        XCTAssertEqual(record.attributes["tracegate.websocket.greeting_messages"], .int(2))
        XCTAssertEqual(record.attributes["tracegate.websocket.greeting"], .string(#"["Welcome! Card [REDACTED]?",{"ask":"order"}]"#))
        let metadataOnly = TraceBuilder(capturesBodies: false).record(for: capture(first))
        XCTAssertNil(metadataOnly.attributes["tracegate.websocket.greeting"], "texts follow capture_bodies")
        XCTAssertEqual(metadataOnly.attributes["tracegate.websocket.greeting_messages"], .int(2))
        let later = TraceBuilder().record(for: capture(turn(["more"], ["ok"], number: 2)))
        XCTAssertNil(later.attributes["tracegate.websocket.greeting_messages"])
    }

    func testABinaryProtobufMessageIsRecordedWithTheTextsItCarries() {
        // Streamlit's ForwardMsg: hash "9f8e7d" and a markdown element "Refunds take **5 days**."
        let forwardMsg: [UInt8] = [0x0A, 0x06] + Array("9f8e7d".utf8) + [0x12, 0x05, 0x12, 0x03, 0x00, 0x01, 0x00, 0x2A, 0x1F, 0x1A, 0x1D, 0xEA, 0x01, 0x1A, 0x0A, 0x18]
            + Array("Refunds take **5 days**.".utf8)
        var answered = turn(["refunds?"], [], number: 1)
        answered.serverMessages = [
            WebSocketTurnMessage(fromClient: false, isText: false, data: forwardMsg, atNanos: 3_000_000),
            WebSocketTurnMessage(fromClient: false, isText: false, data: [0xFF, 0x00, 0x13], atNanos: 3_000_001),
        ]
        answered.serverMessageCount = 2
        let record = TraceBuilder().record(for: capture(answered))
        XCTAssertEqual(
            record.outputs,
            #"[{"binary":true,"size":\#(forwardMsg.count),"texts":["9f8e7d","Refunds take **5 days**."]},{"binary":true,"size":3}]"#)
    }

    private func capture(
        _ turn: WebSocketTurn, session: String? = nil, requestID: String = "req-ws", target: String = "/chat?room=1",
        sampled: Bool = true
    ) -> CapturedExchange {
        CapturedExchange(
            traceIDHigh: 1, traceIDLow: 2, rootSpanID: 3, method: "GET", target: target, upstream: "http://backend:8000",
            userHeadValues: ["alice"], sessionHeadValues: [session], requestID: requestID, requestIDWasGenerated: false,
            headerTags: [], request: .init(), response: .init(), status: 101, startEpochNanos: 1_700_000_000_000_000_000,
            durationNanos: turn.endNanos - turn.startNanos, timeToFirstByteNanos: nil, timeToFirstEventNanos: nil,
            outcome: .completed, sampled: sampled, webSocketTurn: turn, webSocketConnectionID: "ws-00000000000000ab")
    }

    func testAGenericTurnIsNamedAfterThePathWithTheTurnInTheClientRequestID() {
        let record = TraceBuilder().record(for: capture(turn(["hello"], ["Hel", "lo"]), session: "s-1"))
        XCTAssertEqual(record.name, "WS /chat")
        XCTAssertEqual(record.inputs, "hello")
        XCTAssertEqual(record.outputs, #"["Hel","lo"]"#)
        XCTAssertEqual(record.user, "alice")
        XCTAssertEqual(record.session, "s-1")
        XCTAssertEqual(record.clientRequestID, "req-ws:3")
        XCTAssertEqual(record.status, .ok)
        XCTAssertEqual(record.spanType, .unknown)
        XCTAssertEqual(record.attributes["tracegate.websocket.turn"], .int(3))
        XCTAssertEqual(record.attributes["tracegate.websocket.server_messages"], .int(2))
        XCTAssertEqual(record.attributes["tracegate.websocket.time_to_first_message_ms"], .double(2.999))
        XCTAssertEqual(record.endTimeUnixNano - record.startTimeUnixNano, 4_999_000)
        XCTAssertEqual(record.upstreamSpan?.attributes["tracegate.time_to_first_token_ms"], .double(2.999))
    }

    func testWithoutASessionHeaderTheConnectionIsTheSession() {
        let record = TraceBuilder().record(for: capture(turn(["hi"], ["yo"])))
        XCTAssertEqual(record.session, "ws-00000000000000ab")
        XCTAssertEqual(record.attributes["tracegate.session.source"], .string("websocket connection"))
    }

    func testALongRequestIDIsCutSoTheTurnStillFitsFiftyCharacters() {
        let long = String(repeating: "r", count: 60)
        let record = TraceBuilder().record(for: capture(turn(["hi"], []), requestID: long))
        XCTAssertEqual(record.clientRequestID?.count, 50)
        XCTAssertTrue(record.clientRequestID?.hasSuffix(":3") ?? false, record.clientRequestID ?? "")
        XCTAssertEqual(record.tags[IdentityValues.requestIDFullTag], long)
        let other = TraceBuilder().record(for: capture(turn(["hi"], []), requestID: long + "x"))
        XCTAssertNotEqual(other.clientRequestID, record.clientRequestID, "ids alike at the start stay apart")
    }

    func testJSONMessagesStayJSONAndBinaryOnesAreNotedBySize() {
        var mixed = turn([#"{"q":"hi"}"#], [#"{"a":1}"#])
        mixed.serverMessages.append(WebSocketTurnMessage(fromClient: false, isText: false, data: [0, 1, 2], atNanos: 4_000_000))
        let record = TraceBuilder().record(for: capture(mixed))
        XCTAssertEqual(record.inputs, #"{"q":"hi"}"#)
        XCTAssertEqual(record.outputs, #"[{"a":1},{"binary":true,"size":3}]"#)
    }

    func testAConnectionCutMidTurnIsAnErrorTraceKeptWhateverTheSampling() {
        let cut = turn(["question"], ["partial"], ending: .cut("the connection closed without a close handshake"))
        let builder = TraceBuilder()
        let captured = capture(cut, sampled: false)
        XCTAssertTrue(builder.traces(captured), "an error turn is traced even when the connection was not sampled")
        XCTAssertFalse(builder.traces(capture(turn(["q"], ["a"]), sampled: false)))
        let record = builder.record(for: captured)
        XCTAssertEqual(record.status, .error(message: "the connection closed without a close handshake"))
        XCTAssertEqual(record.events.first?.name, "exception")
        XCTAssertEqual(record.outputs, "partial")
    }

    func testRedactionAndMetadataOnlyCaptureApplyAsForHTTP() {
        let secret = turn(["my card is 4111-1111-1111-1111"], ["ok"])
        let redacted = TraceBuilder(redaction: Redaction(patterns: [#"\d{4}-\d{4}-\d{4}-\d{4}"#])).record(for: capture(secret))
        XCTAssertFalse(redacted.inputs?.contains("4111") ?? true, redacted.inputs ?? "")
        let metadataOnly = TraceBuilder(capturesBodies: false).record(for: capture(secret))
        XCTAssertNil(metadataOnly.inputs)
        XCTAssertNil(metadataOnly.outputs)
        XCTAssertEqual(metadataOnly.attributes["tracegate.websocket.client_messages"], .int(1))
    }

    func testARealtimeTurnReadsAsAChatModelCall() {
        var realtime = turn(
            [
                #"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"Hi there"}]}}"#,
                #"{"type":"response.create"}"#,
            ],
            [
                #"{"type":"response.created"}"#, #"{"type":"response.output_text.delta","delta":"Hello"}"#,
                #"{"type":"response.done","response":{"status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello!"}]}],"usage":{"total_tokens":7,"input_tokens":5,"output_tokens":2}}}"#,
            ], kind: .openAIEvents, ending: .endOfResponse("response.done"))
        realtime.context = [message(#"{"type":"session.update","session":{"instructions":"Be kind","model":"gpt-rt"}}"#, fromClient: true)]
        realtime.responseRequestedNanos = 1_000
        realtime.firstDeltaNanos = 2_001_000
        let record = TraceBuilder().record(for: capture(realtime, target: "/v1/realtime?model=gpt-query"))
        XCTAssertEqual(record.name, "WS /v1/realtime")
        XCTAssertEqual(record.spanType, .chatModel)
        XCTAssertEqual(record.requestPreview, "Hi there")
        XCTAssertEqual(record.responsePreview, "Hello!")
        XCTAssertEqual(record.inputs, #"{"model":"gpt-rt","messages":[{"role":"system","content":"Be kind"},{"role":"user","content":"Hi there"}]}"#)
        XCTAssertEqual(record.upstreamSpan?.spanType, .llm)
        XCTAssertEqual(record.upstreamSpan?.attributes[TraceAttributeKey.model], .string("gpt-rt"))
        XCTAssertEqual(record.upstreamSpan?.attributes[TraceAttributeKey.tokenUsage], .string(TokenUsage(inputTokens: 5, outputTokens: 2).mlflowJSON))
        XCTAssertEqual(record.upstreamSpan?.attributes["tracegate.time_to_first_token_ms"], .double(2.0))
        XCTAssertEqual(record.status, .ok)
    }

    func testARealtimeTurnCutBeforeResponseDoneKeepsTheDeltas() {
        var cut = turn(
            [#"{"type":"response.create"}"#],
            [#"{"type":"response.output_audio_transcript.delta","delta":"Hal"}"#, #"{"type":"response.output_audio_transcript.delta","delta":"f"}"#, #"{"type":"session.updated","session":{}}"#],
            kind: .openAIEvents, ending: .cut("the connection closed without a close handshake"))
        cut.responsePending = true
        let record = TraceBuilder().record(for: capture(cut, target: "/v1/realtime?model=gpt-rt%2Dmini"))
        XCTAssertEqual(record.responsePreview, "Half")
        XCTAssertEqual(record.outputs, #"{"status":"incomplete","output_text":"Half"}"#)
        XCTAssertEqual(record.upstreamSpan?.attributes[TraceAttributeKey.model], .string("gpt-rt-mini"), "the model named in the URL")
        XCTAssertEqual(record.status, .error(message: "the connection closed without a close handshake"))
    }

    func testAResponsesTurnOverWebSocketReadsAsTheResponsesAPI() {
        let responses = turn(
            [#"{"type":"response.create","model":"gpt-5","input":"What is 2+2?"}"#],
            [
                #"{"type":"response.created","response":{"id":"resp_1","status":"in_progress","output":[]}}"#,
                #"{"type":"response.output_text.delta","delta":"4"}"#,
                #"{"type":"response.completed","response":{"id":"resp_1","model":"gpt-5","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"4"}]}],"usage":{"input_tokens":8,"output_tokens":1,"total_tokens":9}}}"#,
            ], kind: .openAIEvents, ending: .endOfResponse("response.completed"))
        let record = TraceBuilder().record(for: capture(responses, target: "/v1/responses"))
        XCTAssertEqual(record.spanType, .chatModel)
        XCTAssertEqual(record.requestPreview, "What is 2+2?")
        XCTAssertEqual(record.responsePreview, "4")
        XCTAssertEqual(record.inputs, #"{"model":"gpt-5","input":"What is 2+2?"}"#)
        XCTAssertEqual(record.upstreamSpan?.attributes[TraceAttributeKey.tokenUsage], .string(TokenUsage(inputTokens: 8, outputTokens: 1).mlflowJSON))
    }
}
