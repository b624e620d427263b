import Foundation
import XCTest

@testable import TracegateTrace

final class RedactionTests: XCTestCase {
    func testJSONFieldsOnAPathAreReplacedAndTheRestKeptInOrder() {
        let redaction = Redaction(jsonPaths: ["user.email", "messages.*.name"])
        let text = #"{"user":{"email":"a@b.io","id":7},"messages":[{"role":"user","name":"Ann"},{"role":"system","name":"Bob"}]}"#
        XCTAssertEqual(
            redaction.body(text),
            #"{"user":{"email":"[REDACTED]","id":7},"messages":[{"role":"user","name":"[REDACTED]"},{"role":"system","name":"[REDACTED]"}]}"#)
    }

    func testDoubleStarMatchesAFieldAtAnyDepth() {
        let redaction = Redaction(jsonPaths: ["**.password"])
        XCTAssertEqual(
            redaction.body(#"{"password":"a","x":[{"password":"b","y":{"password":"c"}}],"keep":"password"}"#),
            #"{"password":"[REDACTED]","x":[{"password":"[REDACTED]","y":{"password":"[REDACTED]"}}],"keep":"password"}"#)
    }

    func testAnIndexSegmentSelectsOneArrayElement() {
        XCTAssertEqual(Redaction(jsonPaths: ["a.1"]).body(#"{"a":["x","y","z"]}"#), #"{"a":["x","[REDACTED]","z"]}"#)
    }

    func testTextThatIsNotJSONIsLeftToThePatterns() {
        let redaction = Redaction(jsonPaths: ["a"], patterns: [Redaction.emailPattern])
        XCTAssertEqual(redaction.body("write to ann@example.com now"), "write to [REDACTED] now")
        XCTAssertEqual(redaction.body("{broken"), "{broken")
    }

    func testBuiltInAPIKeyPatternsCatchTheCommonShapes() {
        let redaction = Redaction(patterns: [Redaction.apiKeyPattern])
        let secrets = [
            "sk-proj-abcdefghijklmnop1234", "sk-ant-api03-ABCDEFGHIJKLMNOPQRST", "AKIAIOSFODNN7EXAMPLE",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "xoxb-1234567890-abcdef", "AIzaSyA-abcdefghijklmnopqrstuvwxyz012345",
            "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
        ]
        for secret in secrets {
            let out = redaction.body(#"{"note":"key \#(secret) here"}"#)
            XCTAssertFalse(out.contains(secret), out)
            XCTAssertTrue(out.contains(Redaction.marker), out)
            XCTAssertNotNil(try? JSONSerialization.jsonObject(with: Data(out.utf8)), "still JSON: \(out)")
        }
        XCTAssertEqual(redaction.text("a skeleton key, not a secret"), "a skeleton key, not a secret")
    }

    /// The built-in patterns skip text without their anchors; that must never change the result.
    func testSkippingTextWithoutAnchorsGivesWhatTheRegularExpressionsGive() throws {
        let patterns = [Redaction.apiKeyPattern, Redaction.emailPattern]
        let redaction = Redaction(patterns: patterns)
        let regexes = try patterns.map { try NSRegularExpression(pattern: $0) }
        let fragments = [
            "sk-", "SK-", "abcdefghijklmnopqrstuvwxyz", "0123456789", "AKIA", "akia", "IOSFODNN7EXAMPLE", "ghp_", "GHS_",
            "xoxb-", "XOXP-", "AIza", "aiza", "SyA-abcdefghijklmnopqrstuvwxyz0123456", "Bearer ", "BEARER\t", "basic  ",
            "bAsIc ", "@", "ann", "example.com", ".", " ", "-", "_", "é", "🚀", "\n", "right", "though",
        ]
        var generator = SeededGenerator(state: 42)
        for _ in 0..<3_000 {
            let text = (0..<Int.random(in: 0...12, using: &generator)).map { _ in fragments.randomElement(using: &generator)! }.joined()
            var expected = text
            for regex in regexes {
                expected = regex.stringByReplacingMatches(
                    in: expected, range: NSRange(expected.startIndex..., in: expected), withTemplate: Redaction.marker)
            }
            XCTAssertEqual(redaction.text(text), expected, "for \(text.debugDescription)")
        }
    }

    /// The byte-level check that lets most targets through untouched must agree with the plain
    /// rule: every parameter whose lower-cased name contains a sensitive word is redacted.
    func testQueryFastPathAgreesWithThePlainRule() {
        let words = ["key", "token", "secret", "password", "passwd", "pwd", "auth", "signature", "sig", "credential"]
        func plain(_ target: String) -> String {
            guard let question = target.firstIndex(of: "?") else { return target }
            let parameters = target[target.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false)
                .map { parameter -> String in
                    guard let equals = parameter.firstIndex(of: "=") else { return String(parameter) }
                    let name = parameter[..<equals].lowercased()
                    return words.contains(where: { name.contains($0) }) ? String(parameter[...equals]) + Redaction.marker : String(parameter)
                }
            return String(target[...question]) + parameters.joined(separator: "&")
        }
        let pieces = ["api_KEY", "model", "x", "Token", "s", "ig", "=", "&", "==", "?", "é", "\u{212A}EY", "AUTH", "n=1", "sig=", "=key"]
        var generator = SeededGenerator(state: 7)
        for _ in 0..<5_000 {
            let query = (0..<Int.random(in: 0...8, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined()
            let target = "/v1/chat?" + query
            XCTAssertEqual(QueryRedaction.target(target), plain(target), "for \(target.debugDescription)")
        }
    }

    func testCredentialQueryParametersAreRedactedAndOthersKept() {
        XCTAssertEqual(QueryRedaction.target("/v1/x?api_key=sk-1&model=gpt&token=abc"), "/v1/x?api_key=[REDACTED]&model=gpt&token=[REDACTED]")
        XCTAssertEqual(QueryRedaction.target("/v1/x?model=gpt"), "/v1/x?model=gpt")
        XCTAssertEqual(QueryRedaction.target("/v1/x"), "/v1/x")
    }

    private func exchange(request: String, response: String, target: String = "/v1/chat/completions") -> CapturedExchange {
        CapturedExchange(
            traceIDHigh: 1, traceIDLow: 2, rootSpanID: 3, method: "POST", target: target, upstream: "http://b",
            userHeadValues: ["u"], sessionHeadValues: ["s"], requestID: "r", requestIDWasGenerated: false, headerTags: [("tenant", "key sk-abcdefghijklmnopqrstu")],
            request: .init(bytes: Array(request.utf8), totalSize: request.utf8.count, contentType: "application/json"),
            response: .init(bytes: Array(response.utf8), totalSize: response.utf8.count, contentType: "application/json"),
            status: 200, startEpochNanos: 1, durationNanos: 1, timeToFirstByteNanos: nil, timeToFirstEventNanos: nil,
            outcome: .completed)
    }

    private let chatRequest = #"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"my key is sk-abcdefghijklmnopqrstu, mail me at ann@example.com"}]}"#
    private let chatResponse =
        #"{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Noted, ann@example.com."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#

    func testTheBuilderRedactsInputsOutputsTagsAndPathsBeforeTheTraceLeavesIt() {
        let builder = TraceBuilder(redaction: Redaction(patterns: [Redaction.apiKeyPattern, Redaction.emailPattern]))
        let record = builder.record(for: exchange(request: chatRequest, response: chatResponse, target: "/v1/chat/completions?api_key=sk-zzzzzzzzzzzzzzzzzzzz"))
        let everything = [record.inputs ?? "", record.outputs ?? "", record.tags.values.joined(), "\(record.attributes)", record.name]
            .joined(separator: "\n")
        XCTAssertFalse(everything.contains("sk-"), everything)
        XCTAssertFalse(everything.contains("ann@example.com"), everything)
        XCTAssertTrue(record.inputs?.contains("[REDACTED]") ?? false)
        XCTAssertEqual(record.spanType, .chatModel, "redaction does not stop the payload being understood")
    }

    func testMetadataCaptureKeepsModelAndUsageButNoBodies() {
        let record = TraceBuilder(capturesBodies: false).record(for: exchange(request: chatRequest, response: chatResponse))
        XCTAssertNil(record.inputs)
        XCTAssertNil(record.outputs)
        XCTAssertNil(record.requestPreview)
        XCTAssertEqual(record.spanType, .chatModel)
        XCTAssertEqual(record.attributes[TraceAttributeKey.model], .string("gpt-4o-mini"))
        XCTAssertNotNil(record.attributes[TraceAttributeKey.tokenUsage])
        XCTAssertEqual(record.attributes["tracegate.request.bytes"], .int(Int64(chatRequest.utf8.count)))
    }

    func testErrorsAreRecognisedForSamplingWhateverTheDraw() {
        let builder = TraceBuilder(errorOn4xx: false)
        var failed = exchange(request: "{}", response: "{}")
        XCTAssertFalse(builder.isError(failed))
        failed.status = 503
        XCTAssertTrue(builder.isError(failed))
        failed.status = 404
        XCTAssertFalse(builder.isError(failed))
        XCTAssertTrue(TraceBuilder(errorOn4xx: true).isError(failed))
        failed.status = 200
        failed.outcome = .clientAborted
        XCTAssertTrue(builder.isError(failed))
    }
}
