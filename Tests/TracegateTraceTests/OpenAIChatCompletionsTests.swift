import Foundation
import XCTest
@testable import TracegateTrace

final class OpenAIChatCompletionsTests: XCTestCase {
    typealias F = ChatFixtures

    func testNonStreamedCompletionGivesTextModelUsageAndLastUserText() throws {
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.chatPath, request: F.chatRequest, response: F.chatCompletion,
                                                    contentType: "application/json"))
        XCTAssertEqual(chat.format, .openAIChat)
        XCTAssertEqual(chat.messageFormat, "openai")
        XCTAssertEqual(chat.model, "gpt-4o-mini-2024-07-18", "the response's model wins over the request's")
        XCTAssertFalse(chat.streamed)
        XCTAssertEqual(chat.assistantText, "It is sunny in Paris, 22 °C.")
        XCTAssertEqual(chat.lastUserText, "What's the weather\nin Paris?", "text parts of the last user message joined")
        XCTAssertEqual(chat.usage, TokenUsage(inputTokens: 19, outputTokens: 10, totalTokens: 29, cacheReadInputTokens: 0))
        XCTAssertEqual(chat.usage?.mlflowJSON, #"{"input_tokens":19,"output_tokens":10,"total_tokens":29}"#)
        XCTAssertEqual(chat.finishReason, "stop")
        XCTAssertEqual(chat.toolCalls, [])
        XCTAssertEqual(chat.warnings, [])
        XCTAssertJSONEqual(chat.outputJSON, F.chatCompletion)
        XCTAssertNil(chat.openAIShapedOutput)
    }

    func testOutputJSONKeepsTheResponseMemberOrder() throws {
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.chatPath, request: F.chatRequest, response: F.chatCompletion,
                                                    contentType: "application/json"))
        XCTAssertTrue(chat.outputJSON?.hasPrefix(#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"#) == true)
    }

    func testNonStreamedToolCallsAreListedInOrderAndNullContentGivesNoText() throws {
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.chatPath, request: F.chatRequest,
                                                    response: F.chatCompletionWithToolCalls, contentType: "application/json"))
        XCTAssertNil(chat.assistantText)
        XCTAssertEqual(chat.toolCalls, [
            ToolCall(id: "call_abc123", name: "get_current_weather", arguments: "{\n\"location\": \"Boston, MA\"\n}"),
            ToolCall(id: "call_def456", name: "get_time", arguments: #"{"tz":"America/New_York"}"#),
        ])
        XCTAssertEqual(chat.finishReason, "tool_calls")
        XCTAssertEqual(chat.usage?.totalTokens, 99)
    }

    func testStreamAssemblesTextAndTakesUsageFromTheUsageOnlyLastChunk() throws {
        let chat = try XCTUnwrap(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: F.chatStream))
        XCTAssertTrue(chat.streamed)
        XCTAssertEqual(chat.assistantText, F.chatStreamText)
        XCTAssertEqual(chat.lastUserText, "Say hello in French and Japanese")
        XCTAssertEqual(chat.model, "gpt-4o-mini-2024-07-18")
        XCTAssertEqual(chat.usage, TokenUsage(inputTokens: 14, outputTokens: 11, totalTokens: 25, cacheReadInputTokens: 0))
        XCTAssertEqual(chat.eventCount, 8)
        XCTAssertTrue(chat.streamCompleted)
        XCTAssertEqual(chat.finishReason, "stop")
        XCTAssertEqual(chat.warnings, [])
        XCTAssertJSONEqual(chat.outputJSON, """
        {"id":"chatcmpl-AaJqzKVMd6zL4DbHf6qdWT4TtlpvA","object":"chat.completion","created":1733262731,
         "model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0705bf87c0","service_tier":"default",
         "choices":[{"index":0,"message":{"role":"assistant","content":"\(F.chatStreamText)"},"finish_reason":"stop"}],
         "usage":{"prompt_tokens":14,"completion_tokens":11,"total_tokens":25,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},
                  "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}
        """)
    }

    func testStreamWithoutUsageChunkHasNoUsageInOutput() throws {
        let noUsage = F.chatStream.replacingOccurrences(of: #""choices":[],"usage":{"#, with: #""choices":[],"ignored":{"#)
        let chat = try XCTUnwrap(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: noUsage))
        XCTAssertNil(chat.usage)
        XCTAssertNil(PayloadJSON.parse(chat.outputJSON ?? "")?["usage"])
        XCTAssertEqual(chat.assistantText, F.chatStreamText)
    }

    func testStreamConcatenatesToolCallArgumentFragmentsPerIndex() throws {
        let chat = try XCTUnwrap(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: F.chatToolCallStream))
        XCTAssertEqual(chat.toolCalls, [
            ToolCall(id: "call_DdmO9pD3xa9XTPNJ32zg2hcA", name: "get_weather", arguments: #"{"location": "Paris, France"}"#),
            ToolCall(id: "call_ABC", name: "get_time", arguments: #"{"tz": "CET"}"#),
        ])
        XCTAssertNil(chat.assistantText)
        XCTAssertEqual(chat.finishReason, "tool_calls")
        XCTAssertTrue(chat.streamCompleted)
        XCTAssertEqual(chat.warnings, [])
        let output = try XCTUnwrap(PayloadJSON.parse(chat.outputJSON ?? ""))
        let message = try XCTUnwrap(output["choices"]?[0]?["message"])
        XCTAssertEqual(message["content"], .null)
        XCTAssertJSONEqual(message["tool_calls"]?.serialized, #"""
        [{"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Paris, France\"}"}},
         {"id":"call_ABC","type":"function","function":{"name":"get_time","arguments":"{\"tz\": \"CET\"}"}}]
        """#)
    }

    func testStreamedAndNonStreamedToolCallsHaveTheSameShape() throws {
        let streamed = try XCTUnwrap(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: F.chatToolCallStream))
        let output = try XCTUnwrap(PayloadJSON.parse(streamed.outputJSON ?? ""))
        // Re-reading the assembled object as a non-streamed response gives the same understanding.
        let reread = try XCTUnwrap(ChatTest.interpret(path: F.chatPath, request: F.chatStreamRequest,
                                                      response: output.serialized, contentType: "application/json"))
        XCTAssertEqual(reread.toolCalls, streamed.toolCalls)
        XCTAssertEqual(reread.finishReason, streamed.finishReason)
    }

    /// Chunks are read in place, member by member: names written with escapes, names given twice (the
    /// last counts), choices that are not objects, indexes that are not numbers, and the first real id,
    /// time and model kept.
    func testChunksAreReadAsTheirWholeJSONReads() throws {
        let stream = [
            #"{"id":"","created":0,"choices":[],"prompt_filter_results":[]}"#,
            #"{"\u0069d":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#,
            #"{"id":"other","model":"m-1","choices":[{"ind\u0065x":2,"delta":{"c\u006fntent":"lo"}}],"model":"m-2"}"#,
            #"{"choices":[{"index":0,"delta":{"content":"X"}}],"choices":[{"index":0,"delta":{"content":"X","content":"!"}}]}"#,
            #"{"choices":[{"index":0,"delta":{}},7,{"index":"5","delta":{"content":"?"}}]}"#,
            #"{"choices":[{"index":0,"delta":{},"finish_reason":"length","finish_reason":"stop"}]}"#,
            " [DONE] ",
        ].map { "data: \($0)\n\n" }.joined()
        let chat = try XCTUnwrap(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: stream))
        XCTAssertEqual(chat.assistantText, "Hel!")
        XCTAssertEqual(chat.finishReason, "stop")
        XCTAssertTrue(chat.streamCompleted)
        XCTAssertEqual(chat.warnings, [])
        let output = try XCTUnwrap(PayloadJSON.parse(chat.outputJSON ?? ""))
        XCTAssertEqual(output["id"], .string("chatcmpl-1"))
        XCTAssertEqual(output["created"]?.int, 5)
        XCTAssertEqual(output["model"], .string("m-2"))
        // Choice 2 from the escaped index; 1 from the bare 7 (no content); 2 again from the string index at position 2.
        let choices = try XCTUnwrap(output["choices"]?.array)
        XCTAssertEqual(choices.map { $0["index"]?.int }, [0, 1, 2])
        XCTAssertEqual(choices[1]["message"]?["content"], .null)
        XCTAssertEqual(choices[2]["message"]?["content"], .string("lo?"))
    }

    func testCRLFStreamGivesTheSameResultAsLF() throws {
        let crlf = F.chatStream.replacingOccurrences(of: "\n", with: "\r\n")
        XCTAssertEqual(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: crlf),
                       ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: F.chatStream))
    }

    func testMalformedJSONChunkIsSkippedWithAWarning() throws {
        let broken = F.chatStream.replacingOccurrences(of: #"{"content":" ! En japonais : "}"#, with: #"{"content":" ! En jap"#)
        let chat = try XCTUnwrap(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: broken))
        XCTAssertEqual(chat.assistantText, "Bonjourこんにちは 👋")
        XCTAssertEqual(chat.warnings, ["1 SSE event(s) with malformed JSON skipped"])
        XCTAssertTrue(chat.streamCompleted)
        XCTAssertEqual(chat.usage?.totalTokens, 25)
    }

    func testStreamCutBeforeDoneIsPartialWithWarnings() throws {
        let body = Array(F.chatStream.utf8)
        let cut = String(decoding: body[..<(body.count / 2)], as: UTF8.self)
        let chat = try XCTUnwrap(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: cut, truncated: true))
        XCTAssertFalse(chat.streamCompleted)
        XCTAssertTrue(F.chatStreamText.hasPrefix(chat.assistantText ?? "∅"), chat.assistantText ?? "nil")
        XCTAssertNil(chat.usage)
        XCTAssertTrue(chat.warnings.contains("response body truncated; only the events before the cut were read"), "\(chat.warnings)")
        XCTAssertTrue(chat.warnings.contains("stream ended without its final event (data: [DONE])"), "\(chat.warnings)")
        XCTAssertTrue(chat.warnings.contains("stream ended inside an event; that incomplete event was discarded"), "\(chat.warnings)")
    }

    func testOversizedChunkIsDroppedAndReported() throws {
        let huge = String(repeating: "é", count: 40_000)
        let body = ChatFixtures.sse([(nil, #"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"\#(huge)"}}]}"#)])
            + F.chatStream
        var accumulator = try XCTUnwrap(StreamingChatAccumulator(path: F.chatPath, requestBody: Array(F.chatStreamRequest.utf8),
                                                                 maxEventSize: 16 * 1024))
        accumulator.feed(Array(body.utf8))
        XCTAssertEqual(accumulator.oversizedEvents, 1)
        let chat = try XCTUnwrap(accumulator.finish())
        XCTAssertEqual(chat.assistantText, F.chatStreamText)
        XCTAssertEqual(chat.warnings, ["1 SSE event(s) larger than 16384 bytes dropped"])
    }

    func testAssembledTextIsBoundedByTheAssemblyBudget() throws {
        var accumulator = StreamingChatAccumulator(request: ChatRequest(format: .openAIChat), maxAssembledBytes: 10)
        accumulator.feed(Array(F.chatStream.utf8))
        let chat = try XCTUnwrap(accumulator.finish())
        XCTAssertEqual(chat.assistantText, "Bonjour ! ")
        XCTAssertTrue(chat.warnings.contains("assembled text and arguments over 10 bytes; the rest was dropped"))
    }

    func testErrorBodyIsReportedAsTheError() throws {
        let error = #"{"error":{"message":"Rate limit reached for gpt-4o-mini","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.chatPath, request: F.chatRequest, response: error, contentType: "application/json"))
        XCTAssertEqual(chat.error, "requests: Rate limit reached for gpt-4o-mini")
        XCTAssertJSONEqual(chat.outputJSON, error)
        XCTAssertNil(chat.assistantText)
        XCTAssertEqual(chat.model, "gpt-4o-mini")
    }

    func testErrorChunkInAStreamIsReported() throws {
        let body = ChatFixtures.sse([(nil, #"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#)])
        let chat = try XCTUnwrap(ChatTest.stream(path: F.chatPath, request: F.chatStreamRequest, response: body))
        XCTAssertEqual(chat.error, "server_error: The server had an error")
        XCTAssertFalse(chat.streamCompleted)
    }

    func testTruncatedNonStreamedBodyGivesThePartialTextWithAWarning() throws {
        let body = Array(F.chatCompletion.utf8)
        // Cut right after "It is sunny in Paris, 2".
        let text = F.chatCompletion
        let cutAt = text.utf8.distance(from: text.startIndex, to: try XCTUnwrap(text.range(of: "Paris, 2")).upperBound)
        let chat = try XCTUnwrap(ChatTest.interpret(path: F.chatPath, request: F.chatRequest,
                                                    response: String(decoding: body[..<cutAt], as: UTF8.self),
                                                    contentType: "application/json", truncated: true))
        XCTAssertEqual(chat.assistantText, "It is sunny in Paris, 2")
        XCTAssertNil(chat.usage)
        XCTAssertEqual(chat.warnings, ["response body truncated at \(cutAt) bytes; JSON closed where it was cut, output partial"])
        XCTAssertNotNil(PayloadJSON.parse(chat.outputJSON ?? ""), "the closed JSON is valid")
    }

    func testTruncatedBodyCutInsideAMultiByteCharacterStillGivesValidText() throws {
        let body = Array(F.chatCompletion.utf8)
        guard let degree = body.firstIndex(of: 0xC2) else { return XCTFail("fixture has °") }
        let chat = try XCTUnwrap(ChatPayloadInterpreter.interpret(
            path: F.chatPath, requestBody: Array(F.chatRequest.utf8), responseBody: Array(body[...degree]),
            responseContentType: "application/json", responseTruncated: true))
        XCTAssertEqual(chat.assistantText, "It is sunny in Paris, 22 ")
    }

    func testEveryTruncationOfTheBodyGivesAResultAndNeverCrashes() {
        let body = Array(F.chatCompletionWithToolCalls.utf8)
        for cut in 0..<body.count {
            let chat = ChatPayloadInterpreter.interpret(
                path: F.chatPath, requestBody: Array(F.chatRequest.utf8), responseBody: Array(body[..<cut]),
                responseContentType: "application/json", responseTruncated: true)
            XCTAssertNotNil(chat, "cut at \(cut)")
            XCTAssertFalse(chat?.warnings.isEmpty ?? true, "cut at \(cut)")
        }
    }

    func testAccumulatorReportsEventsAsTheyArriveForTimeToFirstEvent() throws {
        var accumulator = try XCTUnwrap(StreamingChatAccumulator(path: F.chatPath, requestBody: Array(F.chatStreamRequest.utf8)))
        let body = Array(F.chatStream.utf8)
        let firstEnd = try XCTUnwrap(F.chatStream.range(of: "\n\n")).upperBound.utf16Offset(in: F.chatStream)
        XCTAssertEqual(accumulator.feed(body[..<(firstEnd - 1)]), 0)
        XCTAssertEqual(accumulator.eventCount, 0)
        XCTAssertEqual(accumulator.feed(body[(firstEnd - 1)..<firstEnd]), 1)
        XCTAssertEqual(accumulator.eventCount, 1)
        XCTAssertEqual(accumulator.feed(body[firstEnd...]), 7)
        XCTAssertTrue(accumulator.streamCompleted)
        XCTAssertEqual(accumulator.finish()?.assistantText, F.chatStreamText)
    }
}
