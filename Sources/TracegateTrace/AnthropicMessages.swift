/// Anthropic Messages (`POST …/v1/messages`): a `message` object, or a stream of `message_start`,
/// `content_block_start` / `content_block_delta` / `content_block_stop`, `message_delta`, `message_stop`,
/// `ping` and `error` events.
enum AnthropicMessages {
    /// A `message` object; nil if it is not one (with `requireType`, `"type":"message"` is required,
    /// else a `content` array is enough).
    static func interpret(response: PayloadJSON, base: ChatExchange, requireType: Bool) -> ChatExchange? {
        let isMessage = response["type"]?.string == "message"
        guard isMessage || (!requireType && response["content"]?.array != nil) else { return nil }
        var exchange = base
        if let model = response["model"]?.string, !model.isEmpty { exchange.model = model }
        exchange.outputJSON = response.serialized
        let blocks = response["content"]?.array ?? []
        let texts = blocks.compactMap { $0["type"]?.string == "text" ? $0["text"]?.string : nil }
        let text = texts.joined()
        exchange.assistantText = text.isEmpty ? nil : text
        exchange.toolCalls = blocks.compactMap { block in
            switch block["type"]?.string {
            case "tool_use", "server_tool_use", "mcp_tool_use":
                guard let name = block["name"]?.string else { return nil }
                return ToolCall(id: block["id"]?.string, name: name, arguments: (block["input"] ?? .object([])).serialized)
            default:
                return nil
            }
        }
        exchange.finishReason = response["stop_reason"]?.string
        exchange.usage = usage(response["usage"])
        exchange.openAIShapedOutput = openAIShaped(response: response, exchange: exchange).serialized
        return exchange
    }

    /// `{"input_tokens","output_tokens","cache_read_input_tokens","cache_creation_input_tokens"}`; total = input + output.
    static func usage(_ usage: PayloadJSON?) -> TokenUsage? {
        guard let usage, usage.isObject else { return nil }
        let input = usage["input_tokens"]?.int
        let output = usage["output_tokens"]?.int
        guard input != nil || output != nil else { return nil }
        return TokenUsage(inputTokens: input ?? 0, outputTokens: output ?? 0,
                          cacheReadInputTokens: usage["cache_read_input_tokens"]?.int,
                          cacheCreationInputTokens: usage["cache_creation_input_tokens"]?.int)
    }

    /// The message as an OpenAI `chat.completion` object.
    static func openAIShaped(response: PayloadJSON, exchange: ChatExchange) -> PayloadJSON {
        let calls = exchange.toolCalls.map { call in
            PayloadJSON.object(dropping: [
                ("id", call.id.map(PayloadJSON.string)),
                ("type", .string("function")),
                ("function", .object([("name", .string(call.name)), ("arguments", .string(call.arguments))])),
            ])
        }
        let message = PayloadJSON.object(dropping: [
            ("role", .string("assistant")),
            ("content", exchange.assistantText.map(PayloadJSON.string) ?? .null),
            ("tool_calls", calls.isEmpty ? nil : .array(calls)),
        ])
        let finishReason: PayloadJSON
        switch exchange.finishReason {
        case nil: finishReason = .null
        case "end_turn"?, "stop_sequence"?, "pause_turn"?: finishReason = .string("stop")
        case "max_tokens"?, "model_context_window_exceeded"?: finishReason = .string("length")
        case "tool_use"?: finishReason = .string("tool_calls")
        case "refusal"?: finishReason = .string("content_filter")
        case let other?: finishReason = .string(other)
        }
        let usage = exchange.usage.map { usage in
            PayloadJSON.object([
                ("prompt_tokens", .int(usage.inputTokens)),
                ("completion_tokens", .int(usage.outputTokens)),
                ("total_tokens", .int(usage.totalTokens)),
            ])
        }
        return .object(dropping: [
            ("id", response["id"]),
            ("object", .string("chat.completion")),
            ("model", response["model"]),
            ("choices", .array([.object([("index", .int(0)), ("message", message), ("finish_reason", finishReason)])])),
            ("usage", usage),
        ])
    }
}

/// Assembles an Anthropic Messages stream into a `message` object.
///
/// `message_start` gives the message skeleton and the initial usage; blocks are built from
/// `content_block_start` and their deltas (`text_delta` text, `input_json_delta` `partial_json`
/// concatenated then parsed as the tool input, `thinking_delta`, `signature_delta`, `citations_delta`);
/// `message_delta` sets `stop_reason`/`stop_sequence` and its usage fields REPLACE those before (the
/// counts are cumulative, not increments).
struct AnthropicStream: Sendable {
    struct Block: Sendable {
        var index: Int
        var start: PayloadJSON
        var text = ""
        var partialJSON = ""
        var thinking = ""
        var signature = ""
        var citations: [PayloadJSON] = []
    }

    private(set) var completed = false
    private(set) var sawMessageStart = false
    private var message: PayloadJSON?
    private var blocks: [Block] = []
    private var usage: [(String, PayloadJSON)] = []
    private var stopReason: PayloadJSON?
    private var stopSequence: PayloadJSON?
    private var error: String?

    static let eventTypes: Set<String> = [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop", "ping", "error",
    ]

    /// Consumes one event; returns whether it was an Anthropic Messages event.
    mutating func consume(_ event: SSEEvent, notes: inout StreamNotes) -> Bool {
        guard let data = notes.jsonObject(of: event) else { return false }
        guard let type = data["type"]?.string ?? event.event, Self.eventTypes.contains(type) else { return false }
        switch type {
        case "message_start":
            sawMessageStart = true
            if let start = data["message"], start.isObject {
                message = start
                mergeUsage(start["usage"])
            }
        case "content_block_start":
            let index = data["index"]?.int ?? blocks.count
            let start = data["content_block"] ?? .object([("type", .string("text")), ("text", .string(""))])
            if let existing = blocks.firstIndex(where: { $0.index == index }) {
                blocks[existing] = Block(index: index, start: start)
            } else {
                blocks.append(Block(index: index, start: start))
            }
        case "content_block_delta":
            guard let delta = data["delta"] else { break }
            let index = data["index"]?.int ?? 0
            let slot = blockSlot(index, for: delta, notes: &notes)
            switch delta["type"]?.string {
            case "text_delta":
                notes.append(delta["text"]?.string ?? "", to: &blocks[slot].text)
            case "input_json_delta":
                notes.append(delta["partial_json"]?.string ?? "", to: &blocks[slot].partialJSON)
            case "thinking_delta":
                notes.append(delta["thinking"]?.string ?? "", to: &blocks[slot].thinking)
            case "signature_delta":
                blocks[slot].signature += delta["signature"]?.string ?? ""
            case "citations_delta":
                if let citation = delta["citation"] { blocks[slot].citations.append(citation) }
            default:
                break
            }
        case "message_delta":
            if let delta = data["delta"] {
                if let reason = delta["stop_reason"], !reason.isNull { stopReason = reason }
                if let sequence = delta["stop_sequence"] { stopSequence = sequence }
            }
            mergeUsage(data["usage"])
        case "message_stop":
            completed = true
        case "error":
            error = ChatPayloadInterpreter.errorDescription(data["error"]) ?? "error"
        default:
            break // ping, content_block_stop
        }
        return true
    }

    /// The block a delta applies to, created (with a warning) if its `content_block_start` was not seen.
    private mutating func blockSlot(_ index: Int, for delta: PayloadJSON, notes: inout StreamNotes) -> Int {
        if let found = blocks.firstIndex(where: { $0.index == index }) { return found }
        notes.warn("content_block_delta for block \(index) without its content_block_start")
        let type = delta["type"]?.string == "input_json_delta" ? "tool_use" : delta["type"]?.string == "thinking_delta" ? "thinking" : "text"
        blocks.append(Block(index: index, start: .object([("type", .string(type))])))
        return blocks.count - 1
    }

    /// Usage counts are cumulative: later values replace earlier ones (null values are ignored).
    private mutating func mergeUsage(_ update: PayloadJSON?) {
        guard let members = update?.members else { return }
        for (key, value) in members where !value.isNull {
            if let index = usage.firstIndex(where: { $0.0 == key }) {
                usage[index].1 = value
            } else {
                usage.append((key, value))
            }
        }
    }

    /// The assembled `message` object, interpreted like a non-streamed response.
    func finish(base: ChatExchange, notes: inout StreamNotes) -> ChatExchange {
        var exchange = base
        if let error { exchange.error = error }
        guard sawMessageStart || !blocks.isEmpty else {
            if error == nil, notes.sawEvents { notes.warn("no message_start in the stream") }
            return exchange
        }
        var assembled = message ?? .object([("type", .string("message")), ("role", .string("assistant"))])
        if assembled["type"] == nil { assembled = assembled.setting("type", .string("message")) }
        let content = blocks.sorted(by: { $0.index < $1.index }).map { blockJSON($0, notes: &notes) }
        assembled = assembled.setting("content", .array(content))
        if let stopReason { assembled = assembled.setting("stop_reason", stopReason) }
        if let stopSequence { assembled = assembled.setting("stop_sequence", stopSequence) }
        if !usage.isEmpty { assembled = assembled.setting("usage", .object(usage)) }
        return AnthropicMessages.interpret(response: assembled, base: exchange, requireType: false) ?? exchange
    }

    private func blockJSON(_ block: Block, notes: inout StreamNotes) -> PayloadJSON {
        var json = block.start.isObject ? block.start : .object([])
        switch json["type"]?.string {
        case "text":
            json = json.setting("text", .string((json["text"]?.string ?? "") + block.text))
            if !block.citations.isEmpty {
                json = json.setting("citations", .array((json["citations"]?.array ?? []) + block.citations))
            }
        case "tool_use", "server_tool_use", "mcp_tool_use":
            if !block.partialJSON.isEmpty {
                if let input = PayloadJSON.parse(block.partialJSON.utf8) {
                    json = json.setting("input", input)
                } else if let partial = PayloadJSON.parse(block.partialJSON.utf8, allowTruncation: true), partial.value.isObject {
                    notes.warn("input of tool_use block \(block.index) is incomplete JSON; closed where it stopped")
                    json = json.setting("input", partial.value)
                } else {
                    notes.warn("input of tool_use block \(block.index) is not valid JSON; left empty")
                    json = json.setting("input", .object([]))
                }
            } else if json["input"] == nil {
                json = json.setting("input", .object([]))
            }
        case "thinking":
            json = json.setting("thinking", .string((json["thinking"]?.string ?? "") + block.thinking))
            if !block.signature.isEmpty { json = json.setting("signature", .string(block.signature)) }
        default:
            break
        }
        return json
    }
}
