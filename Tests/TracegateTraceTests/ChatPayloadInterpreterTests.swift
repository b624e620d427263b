import Foundation
import XCTest
@testable import TracegateTrace

final class ChatPayloadInterpreterTests: XCTestCase {
    typealias F = ChatFixtures

    private static let streams: [(name: String, path: String, request: String, body: String)] = [
        ("chat text", F.chatPath, F.chatStreamRequest, F.chatStream),
        ("chat tools", F.chatPath, F.chatStreamRequest, F.chatToolCallStream),
        ("responses", F.responsesPath, F.responsesStringRequest, F.responsesStream),
        ("anthropic", F.anthropicPath, F.anthropicRequest, F.anthropicStream),
    ]

    func testStreamsSplitAtEveryByteBoundaryGiveTheSameResultAsOneChunk() throws {
        for stream in Self.streams {
            let body = Array(stream.body.utf8)
            let request = try XCTUnwrap(ChatPayloadInterpreter.recognizeRequest(path: stream.path, requestBody: Array(stream.request.utf8)))
            let whole = try XCTUnwrap(ChatTest.accumulate(request: request, body: body, splits: []))
            XCTAssertEqual(whole.warnings, [], stream.name)
            for split in 0...body.count {
                let result = ChatTest.accumulate(request: request, body: body, splits: [split])
                if result != whole {
                    XCTFail("\(stream.name): split at \(split) differs")
                    break
                }
            }
        }
    }

    func testStreamsFedByteByByteAndInOddChunksGiveTheSameResult() throws {
        for stream in Self.streams {
            let body = Array(stream.body.utf8)
            let whole = ChatTest.accumulate(path: stream.path, request: stream.request, body: body, splits: [])
            XCTAssertEqual(ChatTest.accumulate(path: stream.path, request: stream.request, body: body, splits: Array(1..<body.count)),
                           whole, stream.name)
            XCTAssertEqual(ChatTest.accumulate(path: stream.path, request: stream.request, body: body,
                                               splits: Array(stride(from: 7, to: body.count, by: 13))), whole, stream.name)
        }
    }

    func testCRLFAndCRStreamsGiveTheSameResultForEveryAPI() {
        for stream in Self.streams {
            let lf = ChatTest.stream(path: stream.path, request: stream.request, response: stream.body)
            XCTAssertNotNil(lf, stream.name)
            for lineEnd in ["\r\n", "\r"] {
                let other = stream.body.replacingOccurrences(of: "\n", with: lineEnd)
                XCTAssertEqual(ChatTest.stream(path: stream.path, request: stream.request, response: other), lf,
                               "\(stream.name) \(lineEnd.debugDescription)")
            }
        }
    }

    func testInterpretMatchesTheAccumulator() {
        for stream in Self.streams {
            XCTAssertEqual(ChatTest.stream(path: stream.path, request: stream.request, response: stream.body),
                           ChatTest.accumulate(path: stream.path, request: stream.request, body: Array(stream.body.utf8), splits: []))
        }
    }

    func testStreamIsRecognisedWithoutAContentTypeBySniffing() throws {
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.chatPath, request: F.chatStreamRequest, response: F.chatStream, contentType: nil))
        XCTAssertTrue(chat.streamed)
        XCTAssertEqual(chat.assistantText, F.chatStreamText)
        XCTAssertTrue(ChatPayloadInterpreter.isEventStream(contentType: "Text/Event-Stream ; charset=utf-8"))
        XCTAssertFalse(ChatPayloadInterpreter.isEventStream(contentType: "application/json"))
        XCTAssertTrue(ChatPayloadInterpreter.isEventStream(contentType: " text/event-stream"))
        XCTAssertTrue(ChatPayloadInterpreter.isEventStream(contentType: "TEXT/EVENT-STREAM;charset=utf-8"))
        XCTAssertFalse(ChatPayloadInterpreter.isEventStream(contentType: "text/event-streams"))
        XCTAssertFalse(ChatPayloadInterpreter.isEventStream(contentType: "text/event-strea"))
        XCTAssertFalse(ChatPayloadInterpreter.isEventStream(contentType: "text/event\u{0D}stream"))
        XCTAssertFalse(ChatPayloadInterpreter.isEventStream(contentType: nil))
    }

    func testPathMayCarryAQueryAndAPrefix() {
        XCTAssertNotNil(ChatTest.interpret(path: "/openai/deployments/gpt4/chat/completions?api-version=2024-10-21",
                                           request: F.chatRequest, response: F.chatCompletion, contentType: "application/json"))
        XCTAssertNotNil(ChatTest.interpret(path: "/chat/completions/", request: F.chatRequest, response: F.chatCompletion,
                                           contentType: "application/json"))
    }

    func testNonChatPathsReturnNil() {
        for path in ["/v1/embeddings", "/v1/completions", "/v1/chat/completions/abc", "/v1/messages/count_tokens", "/v1/responses/resp_1", "/"] {
            XCTAssertNil(ChatTest.interpret(path: path, request: F.chatRequest, response: F.chatCompletion, contentType: "application/json"), path)
        }
    }

    func testNonChatJSONReturnsNil() {
        // A chat path but a body without the API's shape.
        XCTAssertNil(ChatTest.interpret(path: F.chatPath, request: #"{"model":"gpt-4o","prompt":"hi"}"#,
                                        response: F.chatCompletion, contentType: "application/json"))
        XCTAssertNil(ChatTest.interpret(path: F.responsesPath, request: #"{"model":"gpt-4.1"}"#,
                                        response: F.responsesResponse, contentType: "application/json"))
        // OpenAI Assistants: POST /v1/threads/{id}/messages has no messages array.
        XCTAssertNil(ChatTest.interpret(path: "/v1/threads/thread_abc/messages", request: #"{"role":"user","content":"Hi"}"#,
                                        response: #"{"id":"msg_1","object":"thread.message","content":[]}"#, contentType: "application/json"))
        // A chat request whose response is JSON of another shape, or not an object.
        XCTAssertNil(ChatTest.interpret(path: F.chatPath, request: F.chatRequest, response: #"{"data":[{"embedding":[0.1]}]}"#,
                                        contentType: "application/json"))
        XCTAssertNil(ChatTest.interpret(path: F.chatPath, request: F.chatRequest, response: "[1,2,3]", contentType: "application/json"))
        XCTAssertNil(ChatTest.interpret(path: F.chatPath, request: "[]", response: F.chatCompletion, contentType: "application/json"))
        // Another SSE protocol on a chat path.
        XCTAssertNil(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: "event: tick\ndata: 42\n\n"))
    }

    func testUnparsableCompleteBodyReturnsNil() {
        XCTAssertNil(ChatTest.interpret(path: F.chatPath, request: F.chatRequest, response: #"{"id":"x","choices":[}"#,
                                        contentType: "application/json"))
        XCTAssertNil(ChatTest.interpret(path: F.chatPath, request: F.chatRequest, response: "Internal Server Error",
                                        contentType: "text/plain"))
    }

    func testBinaryBodiesReturnNil() {
        let binary: [UInt8] = [0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xFF, 0xFE, 0x00, 0x7B]
        XCTAssertNil(ChatPayloadInterpreter.interpret(path: F.chatPath, requestBody: binary, responseBody: Array(F.chatCompletion.utf8),
                                                      responseContentType: "application/json", responseTruncated: false))
        XCTAssertNil(ChatPayloadInterpreter.interpret(path: F.chatPath, requestBody: Array(F.chatRequest.utf8), responseBody: binary,
                                                      responseContentType: "application/octet-stream", responseTruncated: false))
        XCTAssertNil(ChatPayloadInterpreter.interpret(path: F.chatPath, requestBody: Array(F.chatRequest.utf8), responseBody: binary,
                                                      responseContentType: nil, responseTruncated: true))
        XCTAssertNil(ChatPayloadInterpreter.interpret(path: F.chatPath, requestBody: [], responseBody: [],
                                                      responseContentType: nil, responseTruncated: false))
    }

    func testBinaryEventStreamIsAPartialResultNotACrash() throws {
        var bytes: [UInt8] = []
        for i in 0..<4096 { bytes.append(UInt8(truncatingIfNeeded: i &* 7919 &+ 13)) }
        let chat = ChatPayloadInterpreter.interpret(path: F.chatPath, requestBody: Array(F.chatStreamRequest.utf8), responseBody: bytes,
                                                    responseContentType: "text/event-stream", responseTruncated: false)
        // Garbage either yields no events (a partial result saying so) or events that are not chat chunks (nil).
        if let chat { XCTAssertFalse(chat.warnings.isEmpty) }
    }

    func testEmptyStreamIsAPartialResult() throws {
        let chat = try XCTUnwrap(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: ""))
        XCTAssertEqual(chat.eventCount, 0)
        XCTAssertFalse(chat.streamCompleted)
        XCTAssertEqual(chat.warnings, ["no SSE event in the response"])
        XCTAssertEqual(chat.lastUserText, "Say hello in French and Japanese")
    }

    func testTruncatedBodyThatIsNotJSONStillGivesAPartialResult() throws {
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.chatPath, request: F.chatRequest, response: "{\"id\": \"x\", ]",
                                                    contentType: "application/json", truncated: true))
        XCTAssertNil(chat.outputJSON)
        XCTAssertEqual(chat.model, "gpt-4o-mini")
        XCTAssertEqual(chat.warnings.count, 1)
    }

    /// Found by ParserPropertyTests: token counts near Int.max made `total_tokens` (input + output, when the
    /// payload has none) overflow and trap, taking the proxy down.
    func testHugeTokenCountsDoNotOverflowTheTotal() throws {
        let body = #"{"id":"m","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":9223372036854775807,"output_tokens":5}}"#
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.anthropicPath, request: F.anthropicRequest, response: body,
                                                    contentType: "application/json"))
        XCTAssertEqual(chat.usage?.inputTokens, Int.max)
        XCTAssertEqual(chat.usage?.totalTokens, Int.max, "saturated, not wrapped")
        XCTAssertEqual(TokenUsage(inputTokens: Int.min, outputTokens: -1).totalTokens, Int.min)
        XCTAssertEqual(TokenUsage(inputTokens: 2, outputTokens: 3).totalTokens, 5)
    }
}
