import Foundation
import XCTest
@testable import TracegateTrace

final class OpenAIResponsesTests: XCTestCase {
    typealias F = ChatFixtures

    func testNonStreamedResponseGivesOutputTextFunctionCallsAndUsage() throws {
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.responsesPath, request: F.responsesRequest,
                                                    response: F.responsesResponse, contentType: "application/json"))
        XCTAssertEqual(chat.format, .openAIResponses)
        XCTAssertEqual(chat.messageFormat, "openai")
        XCTAssertEqual(chat.model, "gpt-4.1-2025-04-14")
        XCTAssertEqual(chat.assistantText, "In a peaceful grove beneath a silver moon, a unicorn named Lumina slept.")
        XCTAssertEqual(chat.toolCalls, [ToolCall(id: "call_12345xyz", name: "get_weather", arguments: #"{"location":"Paris, France"}"#)])
        XCTAssertEqual(chat.usage, TokenUsage(inputTokens: 36, outputTokens: 87, totalTokens: 123, cacheReadInputTokens: 4))
        XCTAssertEqual(chat.finishReason, "completed")
        XCTAssertNil(chat.error, "\"error\": null is no error")
        XCTAssertEqual(chat.warnings, [])
        XCTAssertJSONEqual(chat.outputJSON, F.responsesResponse)
    }

    func testLastUserTextComesFromTheLastUserInputMessage() throws {
        let list = try XCTUnwrap(ChatPayloadInterpreter.recognizeRequest(path: F.responsesPath, requestBody: Array(F.responsesRequest.utf8)))
        XCTAssertEqual(list.lastUserText, "Write a haiku\nabout it.")
        XCTAssertFalse(list.streamRequested)
        let string = try XCTUnwrap(ChatPayloadInterpreter.recognizeRequest(path: F.responsesPath,
                                                                            requestBody: Array(F.responsesStringRequest.utf8)))
        XCTAssertEqual(string.lastUserText, "Tell me a three sentence bedtime story about a unicorn.")
        XCTAssertTrue(string.streamRequested)
    }

    func testStreamPrefersTheFinalResponseOfResponseCompleted() throws {
        let chat = try XCTUnwrap(ChatTest.stream(path: F.responsesPath, request: F.responsesStringRequest, response: F.responsesStream))
        XCTAssertTrue(chat.streamed)
        XCTAssertTrue(chat.streamCompleted)
        XCTAssertEqual(chat.eventCount, 15)
        XCTAssertEqual(chat.assistantText, "Hi there! ☀️")
        XCTAssertEqual(chat.toolCalls, [ToolCall(id: "call_1", name: "get_weather", arguments: #"{"location":"Paris"}"#)])
        XCTAssertEqual(chat.usage, TokenUsage(inputTokens: 37, outputTokens: 11, totalTokens: 48))
        XCTAssertEqual(chat.finishReason, "completed")
        XCTAssertEqual(chat.warnings, [])
        XCTAssertEqual(PayloadJSON.parse(chat.outputJSON ?? "")?["status"], .string("completed"))
    }

    func testStreamWithoutResponseCompletedIsAssembledFromTheDeltas() throws {
        let chat = try XCTUnwrap(ChatTest.stream(path: F.responsesPath, request: F.responsesStringRequest,
                                                 response: F.responsesStreamWithoutCompletion, truncated: true))
        XCTAssertFalse(chat.streamCompleted)
        XCTAssertEqual(chat.eventCount, 12)
        XCTAssertEqual(chat.assistantText, "Hi there! ☀️")
        XCTAssertEqual(chat.toolCalls, [ToolCall(id: "call_1", name: "get_weather", arguments: #"{"location":"Paris"}"#)])
        XCTAssertNil(chat.usage)
        XCTAssertEqual(chat.model, "gpt-4.1-2025-04-14")
        XCTAssertEqual(chat.warnings, ["response body truncated; only the events before the cut were read",
                                       "stream ended without its final event (response.completed)"])
        let output = try XCTUnwrap(PayloadJSON.parse(chat.outputJSON ?? "")?["output"])
        XCTAssertJSONEqual(output.serialized, #"""
        [{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant",
          "content":[{"type":"output_text","text":"Hi there! ☀️","annotations":[]}]},
         {"id":"fc_1","type":"function_call","status":"in_progress","arguments":"{\"location\":\"Paris\"}","call_id":"call_1","name":"get_weather"}]
        """#)
    }

    func testStreamOfTextDeltasAloneIsAssembled() throws {
        let body = F.sse([
            ("response.output_text.delta", #"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello"}"#),
            ("response.output_text.delta", #"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":", world"}"#),
        ])
        let chat = try XCTUnwrap(ChatTest.stream(path: F.responsesPath, request: F.responsesStringRequest, response: body))
        XCTAssertEqual(chat.assistantText, "Hello, world")
    }

    func testFailedResponseReportsItsError() throws {
        let body = F.sse([
            ("response.created", #"{"type":"response.created","sequence_number":0,"response":{"id":"resp_9","object":"response","status":"in_progress","error":null,"model":"gpt-4.1","output":[]}}"#),
            ("response.failed", #"{"type":"response.failed","sequence_number":1,"response":{"id":"resp_9","object":"response","status":"failed","error":{"code":"server_error","message":"The model failed to generate a response."},"model":"gpt-4.1","output":[]}}"#),
        ])
        let chat = try XCTUnwrap(ChatTest.stream(path: F.responsesPath, request: F.responsesStringRequest, response: body))
        XCTAssertEqual(chat.error, "server_error: The model failed to generate a response.")
        XCTAssertEqual(chat.finishReason, "failed")
        XCTAssertFalse(chat.streamCompleted)
    }

    func testErrorEventIsReported() throws {
        let body = F.sse([("error", #"{"type":"error","code":"ERR_SOMETHING","message":"Something went wrong","param":null,"sequence_number":1}"#)])
        let chat = try XCTUnwrap(ChatTest.stream(path: F.responsesPath, request: F.responsesStringRequest, response: body))
        XCTAssertEqual(chat.error, "ERR_SOMETHING: Something went wrong")
    }
}
