import Foundation
import XCTest
@testable import TracegateTrace

/// Deterministic generator for id tests (SplitMix64).
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Yields the given values, then zeros.
struct ScriptedGenerator: RandomNumberGenerator {
    var values: [UInt64]
    mutating func next() -> UInt64 { values.isEmpty ? 0 : values.removeFirst() }
}

enum TraceRecordFixtures {
    static let traceID = TraceID(high: 0xc793_67d3_709d_c94f, low: 0x10a9_5dc2_7a16_59b2)
    static let spanID = SpanID(value: 0xa1b2_c3d4_e5f6_0718)

    /// The reference's verified chat example as a record.
    static func chat() -> TraceRecord {
        TraceRecord(
            traceID: traceID, rootSpanID: spanID, name: "POST /v1/chat/completions",
            startTimeUnixNano: 1_795_563_487_174_052_728, endTimeUnixNano: 1_795_563_488_424_052_728,
            status: .ok, spanType: .chatModel,
            inputs: #"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is MLflow?"}]}"#,
            outputs: #"{"id":"chatcmpl-9","choices":[{"index":0,"message":{"role":"assistant","content":"An open-source ML platform."},"finish_reason":"stop"}]}"#,
            attributes: [
                TraceAttributeKey.tokenUsage: TraceAttributeKey.tokenUsage(inputTokens: 12, outputTokens: 7),
                TraceAttributeKey.messageFormat: .string("openai"),
                TraceAttributeKey.model: .string("gpt-4o-mini"),
                TraceAttributeKey.httpResponseStatusCode: .int(200),
            ],
            user: "u1", session: "sess-42", clientRequestID: "req-7f3c9a",
            tags: ["mlflow.traceName": "chat.completions", "proxy.backend": "backend-a"],
            metadata: ["proxy.backend": "backend-a"])
    }
}

/// Parses JSON bytes with Foundation, failing the test if they are not valid JSON.
func parseJSON(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
    let object = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
    return try XCTUnwrap(object as? [String: Any], "top level is not an object", file: file, line: line)
}
