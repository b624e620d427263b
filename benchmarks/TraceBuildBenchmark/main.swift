import Foundation
import TracegateTrace

/// CPU per trace of the builder thread's work: `TraceBuilder.record` and the trace-file line, for
/// the exchanges `benchmarks/run` and `benchmarks/chat_streams` send and a `benchmarks/ws_tunnels`
/// turn. A program, not a test: run it from a release build (`benchmarks/trace_build`).
///
///     trace-build-benchmark [--traces N] [--runs R] [--only NAME]
@main
enum TraceBuildBenchmark {
    static func main() {
        var traces = 20_000
        var runs = 7
        var only: String?
        var arguments = CommandLine.arguments.dropFirst()
        while let flag = arguments.popFirst() {
            switch flag {
            case "--traces": traces = Int(arguments.popFirst() ?? "") ?? traces
            case "--runs": runs = Int(arguments.popFirst() ?? "") ?? runs
            case "--only": only = arguments.popFirst()
            default:
                print("usage: trace-build-benchmark [--traces N] [--runs R] [--only NAME]")
                exit(2)
            }
        }
        let builder = TraceBuilder(
            redaction: Redaction(patterns: [Redaction.apiKeyPattern]),  // the default `redact_builtin = api_keys`
            sources: [TraceSource(name: "127.0.0.1:8000", type: "PROXY")])
        print("workload            µs/trace p50   µs/trace min   line bytes")
        for (name, exchange) in Workload.all where only == nil || only == name {
            var samples: [Double] = []
            var lineBytes = 0
            for run in 0...runs {  // run 0 warms up
                var chain = ResponseSessionChain()
                var lines: [UInt8] = []
                lines.reserveCapacity(1 << 20)
                let started = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<traces {
                    let record = builder.record(for: exchange, chain: &chain)
                    TraceRecordJSON.appendLine(record, to: &lines)
                    if lines.count > 1 << 20 {
                        lineBytes = lines.count
                        lines.removeAll(keepingCapacity: true)
                    }
                }
                let elapsed = DispatchTime.now().uptimeNanoseconds - started
                if lineBytes == 0 { lineBytes = lines.count }
                if run > 0 { samples.append(Double(elapsed) / Double(traces) / 1_000) }
            }
            samples.sort()
            let line = TraceRecordJSON.line(builder.record(for: exchange)).count
            print(
                name.padding(toLength: 20, withPad: " ", startingAt: 0)
                    + String(format: "%12.2f   %12.2f   %10d", samples[samples.count / 2], samples[0], line))
        }
    }
}

/// The exchanges measured: as the proxy captures them.
enum Workload {
    static let chatCompletion = Array(
        (#"{"id":"chatcmpl-9xKq2bT7cQ4mZ1vN8pLwR3sYdE6f","object":"chat.completion","created":1718000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! The proxy forwarded this request and the response came back unchanged. Is there anything else you would like to check about latency or streaming?"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":21,"completion_tokens":31,"total_tokens":52},"system_fingerprint":"fp_0ba0d124f1"}"#)
            .utf8)

    static let chatRequest = Array(
        (#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Does the proxy change anything about my request?"}],"stream":true}"#)
            .utf8)

    /// 20 events as `benchmarks/chat_origin.js` sends them, then `[DONE]`.
    static let chatStream: [UInt8] = {
        var text = ""
        for index in 0..<20 {
            text += #"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1718000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"token\#(index) "},"finish_reason":null}]}"#
            text += "\n\n"
        }
        text += "data: [DONE]\n\n"
        return Array(text.utf8)
    }()

    static func exchange(
        method: String, target: String, request: [UInt8], requestType: String?, response: [UInt8], responseType: String,
        chunks: Int = 0
    ) -> CapturedExchange {
        CapturedExchange(
            traceIDHigh: 0x0123_4567_89ab_cdef, traceIDLow: 0xfedc_ba98_7654_3210, rootSpanID: 0x1122_3344_5566_7788,
            method: method, target: target, upstream: "http://127.0.0.1:8000", requestID: "4f9c2a0e-8d1b-4c2e-9a57-2b8f0c6d1e3a",
            requestIDWasGenerated: true, headerTags: [],
            request: .init(bytes: request, totalSize: request.count, contentType: requestType),
            response: .init(bytes: response, totalSize: response.count, contentType: responseType),
            status: 200, startEpochNanos: 1_718_000_000_000_000_000, durationNanos: 1_200_000, timeToFirstByteNanos: 900_000,
            timeToFirstEventNanos: chunks > 0 ? 950_000 : nil, outcome: .completed, upstreamSentNanos: 40_000,
            chunkArrivals: (0..<min(chunks, CapturedExchange.maxChunkArrivals)).map {
                .init(byteEnd: response.count * ($0 + 1) / chunks, nanos: 950_000 + Int64($0) * 250_000_000)
            },
            lastResponseBytesNanos: chunks > 0 ? 5_000_000_000 : nil)
    }

    /// A generic WebSocket turn as `benchmarks/ws_tunnels` makes them: 256 bytes of text each way.
    static let webSocketEchoTurn: CapturedExchange = {
        let text = [UInt8](repeating: UInt8(ascii: "x"), count: 256)
        var turn = WebSocketTurn(number: 7, protocolKind: .generic, startNanos: 1_000_000)
        turn.clientMessages = [WebSocketTurnMessage(fromClient: true, isText: true, data: text, atNanos: 1_000_000)]
        turn.serverMessages = [WebSocketTurnMessage(fromClient: false, isText: true, data: text, atNanos: 1_300_000)]
        turn.clientMessageCount = 1
        turn.serverMessageCount = 1
        turn.firstServerMessageNanos = 1_300_000
        turn.endNanos = 1_300_000
        turn.storage = 2 * text.count
        var captured = exchange(method: "GET", target: "/", request: [], requestType: nil, response: [], responseType: "text/plain")
        captured.status = 101
        captured.webSocketTurn = turn
        captured.webSocketConnectionID = "ws-1bf7c2af5b788f60"
        return captured
    }()

    static let all: [(String, CapturedExchange)] = [
        ("get-chat-json", exchange(method: "GET", target: "/", request: [], requestType: nil, response: chatCompletion, responseType: "application/json")),
        (
            "post-chat-json",
            exchange(
                method: "POST", target: "/v1/chat/completions", request: chatRequest, requestType: "application/json",
                response: chatCompletion, responseType: "application/json")
        ),
        (
            "post-chat-sse-20",
            exchange(
                method: "POST", target: "/v1/chat/completions", request: chatRequest, requestType: "application/json",
                response: chatStream, responseType: "text/event-stream", chunks: 21)
        ),
        ("get-plain-text", exchange(method: "GET", target: "/healthz?probe=1", request: [], requestType: nil, response: Array("ok\n".utf8), responseType: "text/plain")),
        ("ws-echo-turn", webSocketEchoTurn),
    ]
}
