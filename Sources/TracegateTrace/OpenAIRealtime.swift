/// OpenAI's Realtime API (over WebSocket), read from one turn's events: the conversation items the
/// client added (`conversation.item.create`, voice transcripts), the instructions and model of the
/// session, and the response that `response.done` reports (output items, usage, status) or, if
/// it never came, what the deltas had said.
enum OpenAIRealtime {
    /// Server events that only the Realtime protocol sends (the Responses API over WebSocket shares `response.*`).
    static func isRealtimeOnly(_ type: String) -> Bool {
        type.hasPrefix("session.") || type.hasPrefix("conversation.") || type.hasPrefix("input_audio_buffer.")
            || type == "response.done" || type.hasPrefix("rate_limits.")
    }

    static func read(_ turn: WebSocketTurn, query: Substring) -> WebSocketTurnReading {
        var model = Self.queryModel(query)
        var instructions: String?
        var messages: [PayloadJSON] = []
        var lastUserText: String?
        var deltas = ""
        var response: PayloadJSON?
        var endEvent: PayloadJSON?

        for message in turn.context + turn.clientMessages where message.fromClient {
            guard let event = json(message) else { continue }
            switch message.eventType {
            case "session.update":
                if let session = event["session"] {
                    if let named = session["model"]?.string { model = named }
                    if let text = session["instructions"]?.string { instructions = text }
                }
            case "conversation.item.create":
                if let item = event["item"], let chatMessage = chatMessage(item) {
                    messages.append(chatMessage)
                    if item["role"]?.string == "user", let text = chatMessage["content"]?.string { lastUserText = text }
                }
            case "response.create":
                if let text = event["response"]?["instructions"]?.string { instructions = text }
            default:
                break
            }
        }
        for message in turn.context.filter({ !$0.fromClient }) + turn.serverMessages {
            guard let type = message.eventType else { continue }
            if type.hasSuffix("text.delta") || type.hasSuffix("transcript.delta") {
                if let delta = json(message)?["delta"]?.string { deltas += delta }
                continue
            }
            guard let event = json(message) else { continue }
            switch type {
            case "session.created", "session.updated":
                if let named = event["session"]?["model"]?.string { model = named }
            case "conversation.item.input_audio_transcription.completed":
                if let transcript = event["transcript"]?.string {
                    messages.append(.object([("role", .string("user")), ("content", .string(transcript))]))
                    lastUserText = transcript
                }
            case "response.done":
                response = event["response"]
                endEvent = event
            case "error":
                endEvent = endEvent ?? event
            default:
                break
            }
        }
        if let instructions { messages.insert(.object([("role", .string("system")), ("content", .string(instructions))]), at: 0) }

        // Read as the Responses API's chat (the same message format; the trace names the protocol).
        var chat = ChatExchange(format: .openAIResponses, model: model, streamed: true, lastUserText: lastUserText)
        chat.eventCount = turn.serverMessageCount
        chat.streamCompleted = response != nil
        if let response {
            let outputText = assistantText(response)
            chat.assistantText = outputText.isEmpty ? (deltas.isEmpty ? nil : deltas) : outputText
            chat.usage = usage(response["usage"])
            chat.finishReason = response["status"]?.string
            chat.toolCalls = toolCalls(response)
            chat.outputJSON = response.serialized
            if chat.finishReason == "failed" {
                let error = response["status_details"]?["error"]
                chat.error = [error?["type"]?.string, error?["message"]?.string].compactMap { $0 }.joined(separator: ": ")
            }
        } else {
            chat.assistantText = deltas.isEmpty ? nil : deltas
            chat.outputJSON = PayloadJSON.object(dropping: [
                ("status", .string("incomplete")), ("output_text", deltas.isEmpty ? nil : .string(deltas)),
                ("error", endEvent?["error"]),
            ]).serialized
            if let error = endEvent?["error"] {
                chat.error = [error["type"]?.string, error["message"]?.string].compactMap { $0 }.joined(separator: ": ")
            }
            chat.warnings.append("the turn ended before response.done: output assembled from the deltas")
        }
        let inputs: PayloadJSON =
            messages.isEmpty
            ? .object([("events", .array(turn.clientMessages.map { .string($0.eventType ?? "message") }))])
            : PayloadJSON.object(dropping: [("model", model.map(PayloadJSON.string)), ("messages", .array(messages))])
        return WebSocketTurnReading(inputs: inputs.serialized, outputs: chat.outputJSON, chat: chat)
    }

    /// `?model=gpt-realtime` on the upgrade request.
    static func queryModel(_ query: Substring) -> String? {
        for pair in query.split(separator: "&") where pair.hasPrefix("model=") {
            let value = pair.dropFirst("model=".count)
            return value.isEmpty ? nil : String(value).removingPercentEncodingLeniently
        }
        return nil
    }

    private static func json(_ message: WebSocketTurnMessage) -> PayloadJSON? {
        guard message.isText, !message.omitted, !message.compressedNotInflated else { return nil }
        return PayloadJSON.parse(message.data, allowTruncation: message.isTruncated)?.value
    }

    /// A conversation item as a chat message: role and text (`input_text`, `text`, `output_text`, or an
    /// audio part's transcript); a function call's output as a `tool` message.
    private static func chatMessage(_ item: PayloadJSON) -> PayloadJSON? {
        switch item["type"]?.string {
        case "message"?, nil:
            guard let role = item["role"]?.string else { return nil }
            return .object([("role", .string(role)), ("content", .string(text(item["content"])))])
        case "function_call_output"?:
            return PayloadJSON.object(dropping: [
                ("role", .string("tool")), ("tool_call_id", item["call_id"]), ("content", .string(item["output"]?.string ?? "")),
            ])
        default:
            return nil
        }
    }

    /// The text of content parts: their `text`, or an audio part's `transcript`.
    private static func text(_ content: PayloadJSON?) -> String {
        if let text = content?.string { return text }
        return (content?.array ?? []).compactMap { part in part["text"]?.string ?? part["transcript"]?.string }.joined()
    }

    private static func assistantText(_ response: PayloadJSON) -> String {
        (response["output"]?.array ?? []).filter { $0["type"]?.string == "message" }.map { text($0["content"]) }.joined()
    }

    private static func toolCalls(_ response: PayloadJSON) -> [ToolCall] {
        (response["output"]?.array ?? []).compactMap { item in
            guard item["type"]?.string == "function_call", let name = item["name"]?.string else { return nil }
            return ToolCall(id: item["call_id"]?.string, name: name, arguments: item["arguments"]?.string ?? "")
        }
    }

    private static func usage(_ usage: PayloadJSON?) -> TokenUsage? {
        guard let usage, let input = usage["input_tokens"]?.int, let output = usage["output_tokens"]?.int else { return nil }
        return TokenUsage(
            inputTokens: input, outputTokens: output, totalTokens: usage["total_tokens"]?.int,
            cacheReadInputTokens: usage["input_token_details"]?["cached_tokens"]?.int)
    }
}

extension String {
    /// `%XX` sequences decoded where they make valid UTF-8; `+` is a space. Anything malformed stays as it is.
    fileprivate var removingPercentEncodingLeniently: String {
        var bytes: [UInt8] = []
        var utf8 = Array(self.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%"), utf8.count >= 2, let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte == UInt8(ascii: "+") ? 0x20 : byte)
            }
        }
        return String(validating: bytes, as: UTF8.self) ?? self
    }
}
