import Foundation
import XCTest
@testable import TracegateTrace

final class AnthropicMessagesTests: XCTestCase {
    typealias F = ChatFixtures

    func testNonStreamedMessageGivesTextToolUseAndUsageWithCacheCounts() throws {
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.anthropicPath, request: F.anthropicRequest,
                                                    response: F.anthropicMessage, contentType: "application/json"))
        XCTAssertEqual(chat.format, .anthropic)
        XCTAssertEqual(chat.messageFormat, "anthropic")
        XCTAssertEqual(chat.model, "claude-sonnet-4-20250514")
        XCTAssertEqual(chat.assistantText, "I'll check the current weather in San Francisco.")
        XCTAssertEqual(chat.toolCalls, [ToolCall(id: "toolu_01A09q90qw90lq917835lq9", name: "get_weather",
                                                 arguments: #"{"location":"San Francisco, CA","unit":"celsius"}"#)])
        XCTAssertEqual(chat.usage, TokenUsage(inputTokens: 472, outputTokens: 89, totalTokens: 561,
                                              cacheReadInputTokens: 100, cacheCreationInputTokens: 0))
        XCTAssertEqual(chat.usage?.mlflowJSON, #"{"input_tokens":472,"output_tokens":89,"total_tokens":561}"#)
        XCTAssertEqual(chat.finishReason, "tool_use")
        XCTAssertEqual(chat.warnings, [])
        XCTAssertJSONEqual(chat.outputJSON, F.anthropicMessage)
    }

    func testLastUserTextSkipsUserMessagesHoldingOnlyToolResults() throws {
        let request = try XCTUnwrap(ChatPayloadInterpreter.recognizeRequest(path: F.anthropicPath, requestBody: Array(F.anthropicRequest.utf8)))
        XCTAssertEqual(request.lastUserText, "What's the weather like in San Francisco?")
        XCTAssertTrue(request.streamRequested)
        XCTAssertFalse(request.needsResponseConfirmation)
    }

    func testOpenAIShapedOutputMapsTextToolCallsStopReasonAndUsage() throws {
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.anthropicPath, request: F.anthropicRequest,
                                                    response: F.anthropicMessage, contentType: "application/json"))
        XCTAssertJSONEqual(chat.openAIShapedOutput, #"""
        {"id":"msg_01XFDUDYJgAACzvnptvVoYEL","object":"chat.completion","model":"claude-sonnet-4-20250514",
         "choices":[{"index":0,"message":{"role":"assistant","content":"I'll check the current weather in San Francisco.",
            "tool_calls":[{"id":"toolu_01A09q90qw90lq917835lq9","type":"function",
                           "function":{"name":"get_weather","arguments":"{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"}}]},
            "finish_reason":"tool_calls"}],
         "usage":{"prompt_tokens":472,"completion_tokens":89,"total_tokens":561}}
        """#)
    }

    func testStreamAssemblesTheMessageAndTakesTheLastCumulativeUsageNotTheSum() throws {
        let chat = try XCTUnwrap(ChatTest.stream(path: F.anthropicPath, request: F.anthropicRequest, response: F.anthropicStream))
        XCTAssertTrue(chat.streamed)
        XCTAssertEqual(chat.eventCount, 15)
        XCTAssertTrue(chat.streamCompleted)
        XCTAssertEqual(chat.assistantText, F.anthropicStreamText)
        XCTAssertEqual(chat.usage, TokenUsage(inputTokens: 472, outputTokens: 89, totalTokens: 561,
                                              cacheReadInputTokens: 100, cacheCreationInputTokens: 0))
        XCTAssertEqual(chat.toolCalls, [ToolCall(id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", name: "get_weather",
                                                 arguments: #"{"location":"San Francisco, CA","unit":"fahrenheit"}"#)])
        XCTAssertEqual(chat.finishReason, "tool_use")
        XCTAssertEqual(chat.warnings, [])
        XCTAssertJSONEqual(chat.outputJSON, #"""
        {"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-20250514",
         "content":[{"type":"text","text":"Okay, let's check the weather — ☁️ for San Francisco."},
                    {"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather",
                     "input":{"location":"San Francisco, CA","unit":"fahrenheit"}}],
         "stop_reason":"tool_use","stop_sequence":null,
         "usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":100,"output_tokens":89,"service_tier":"standard"}}
        """#)
        XCTAssertNotNil(chat.openAIShapedOutput)
    }

    func testStreamedAndNonStreamedMessagesAreUnderstoodAlike() throws {
        let streamed = try XCTUnwrap(ChatTest.stream(path: F.anthropicPath, request: F.anthropicRequest, response: F.anthropicStream))
        let reread = try XCTUnwrap(ChatTest.interpret(path: F.anthropicPath, request: F.anthropicRequest,
                                                      response: try XCTUnwrap(streamed.outputJSON), contentType: "application/json"))
        XCTAssertEqual(reread.assistantText, streamed.assistantText)
        XCTAssertEqual(reread.toolCalls, streamed.toolCalls)
        XCTAssertEqual(reread.usage, streamed.usage)
        XCTAssertEqual(reread.openAIShapedOutput, streamed.openAIShapedOutput)
    }

    func testErrorEventEndsTheStreamWithTheError() throws {
        let body = F.sse([
            ("message_start", #"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-haiku-latest","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}"#),
            ("content_block_start", #"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            ("content_block_delta", #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#),
            ("error", #"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        ])
        let chat = try XCTUnwrap(ChatTest.stream(path: F.anthropicPath, request: F.anthropicRequest, response: body))
        XCTAssertEqual(chat.error, "overloaded_error: Overloaded")
        XCTAssertEqual(chat.assistantText, "Hel")
        XCTAssertFalse(chat.streamCompleted)
        XCTAssertEqual(chat.usage, TokenUsage(inputTokens: 12, outputTokens: 1))
        XCTAssertEqual(chat.warnings, ["stream ended without its final event (message_stop)"])
    }

    func testStreamCutInsideToolInputClosesTheInputWithAWarning() throws {
        let marker = #"", \"unit\": \"fahrenheit\"}"#
        let full = F.anthropicStream
        let cut = String(full[..<(try XCTUnwrap(full.range(of: marker)).lowerBound)])
        // Keep the events before the cut, and end the stream there.
        let lastBlank = try XCTUnwrap(cut.range(of: "\n\n", options: .backwards)).upperBound
        let chat = try XCTUnwrap(ChatTest.stream(path: F.anthropicPath, request: F.anthropicRequest,
                                                 response: String(cut[..<lastBlank]), truncated: true))
        XCTAssertEqual(chat.toolCalls.first?.arguments, #"{"location":"San Francisco, CA"}"#)
        XCTAssertTrue(chat.warnings.contains("input of tool_use block 1 is incomplete JSON; closed where it stopped"), "\(chat.warnings)")
        XCTAssertEqual(chat.usage?.outputTokens, 2, "only message_start's usage arrived")
        XCTAssertFalse(chat.streamCompleted)
    }

    func testThinkingBlocksAreAssembledWithTheirSignature() throws {
        let body = F.sse([
            ("message_start", #"{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":30,"output_tokens":4}}}"#),
            ("content_block_start", #"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#),
            ("content_block_delta", #"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me add: 2+2=4."}}"#),
            ("content_block_delta", #"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}"#),
            ("content_block_stop", #"{"type":"content_block_stop","index":0}"#),
            ("content_block_start", #"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#),
            ("content_block_delta", #"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"4"}}"#),
            ("content_block_stop", #"{"type":"content_block_stop","index":1}"#),
            ("message_delta", #"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":30,"output_tokens":25}}"#),
            ("message_stop", #"{"type":"message_stop"}"#),
        ])
        let chat = try XCTUnwrap(ChatTest.stream(path: F.anthropicPath, request: F.anthropicRequest, response: body))
        XCTAssertEqual(chat.assistantText, "4")
        XCTAssertEqual(chat.usage, TokenUsage(inputTokens: 30, outputTokens: 25))
        let content = try XCTUnwrap(PayloadJSON.parse(chat.outputJSON ?? "")?["content"])
        XCTAssertJSONEqual(content.serialized, #"[{"type":"thinking","thinking":"Let me add: 2+2=4.","signature":"EqQBCgIYAhIM"},{"type":"text","text":"4"}]"#)
        XCTAssertEqual(PayloadJSON.parse(chat.openAIShapedOutput ?? "")?["choices"]?[0]?["finish_reason"], .string("stop"))
    }

    func testRequestWithoutMaxTokensNeedsAMessageResponse() throws {
        let request = #"{"model":"claude-3-5-haiku-latest","messages":[{"role":"user","content":"Hi"}]}"#
        let message = #"{"id":"msg_3","type":"message","role":"assistant","model":"claude-3-5-haiku-latest","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":8,"output_tokens":2}}"#
        XCTAssertEqual(ChatTest.interpret(path: F.anthropicPath, request: request, response: message,
                                          contentType: "application/json")?.assistantText, "Hello")
        XCTAssertNil(ChatTest.interpret(path: F.anthropicPath, request: request, response: #"{"content":[],"ok":true}"#,
                                        contentType: "application/json"))
        XCTAssertNotNil(ChatTest.stream(path: F.anthropicPath, request: request, response: F.anthropicStream))
        XCTAssertNil(ChatTest.stream(path: F.anthropicPath, request: request, response: "data: {\"type\":\"ping\"}\n\n"))
    }

    func testAnthropicErrorBodyIsReported() throws {
        let error = #"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.anthropicPath, request: F.anthropicRequest, response: error,
                                                    contentType: "application/json"))
        XCTAssertEqual(chat.error, "invalid_request_error: max_tokens: Field required")
        XCTAssertNil(chat.usage)
    }
}
