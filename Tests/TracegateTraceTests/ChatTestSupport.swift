import XCTest
@testable import TracegateTrace

enum ChatTest {
    static func interpret(path: String, request: String, response: String, contentType: String?,
                          truncated: Bool = false) -> ChatExchange? {
        ChatPayloadInterpreter.interpret(
            path: path, requestBody: Array(request.utf8), responseBody: Array(response.utf8),
            responseContentType: contentType, responseTruncated: truncated)
    }

    static func stream(path: String, request: String, response: String, truncated: Bool = false) -> ChatExchange? {
        interpret(path: path, request: request, response: response, contentType: "text/event-stream; charset=utf-8",
                  truncated: truncated)
    }

    /// Feeds `body` to a fresh accumulator in the chunks given by the split points.
    static func accumulate(path: String, request: String, body: [UInt8], splits: [Int]) -> ChatExchange? {
        guard let recognized = ChatPayloadInterpreter.recognizeRequest(path: path, requestBody: Array(request.utf8)) else { return nil }
        return accumulate(request: recognized, body: body, splits: splits)
    }

    static func accumulate(request: ChatRequest, body: [UInt8], splits: [Int]) -> ChatExchange? {
        var accumulator = StreamingChatAccumulator(request: request)
        var start = 0
        for split in splits + [body.count] {
            accumulator.feed(body[start..<split])
            start = split
        }
        return accumulator.finish()
    }
}

/// Asserts two JSON texts hold the same value (member order ignored).
func XCTAssertJSONEqual(_ actual: String?, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
    guard let actual else {
        XCTFail("no JSON", file: file, line: line)
        return
    }
    guard let left = PayloadJSON.parse(actual) else {
        XCTFail("not JSON: \(actual)", file: file, line: line)
        return
    }
    guard let right = PayloadJSON.parse(expected) else {
        XCTFail("expected text is not JSON: \(expected)", file: file, line: line)
        return
    }
    XCTAssertEqual(left, right, "\(actual)\n  is not\n\(expected)", file: file, line: line)
}
