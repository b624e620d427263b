/// OpenAI Responses (`POST …/responses`): a `response` object, or a stream of typed events
/// (`response.created`, `response.output_item.added`, `response.output_text.delta`,
/// `response.function_call_arguments.delta`, `response.output_item.done`, `response.completed`...).
enum OpenAIResponses {
    /// A `response` object; nil if it has neither `"object":"response"` nor an `output` array.
    static func interpret(response: PayloadJSON, base: ChatExchange) -> ChatExchange? {
        guard response["object"]?.string == "response" || response["output"]?.array != nil else { return nil }
        var exchange = base
        if let model = response["model"]?.string, !model.isEmpty { exchange.model = model }
        if let id = response["id"]?.string, !id.isEmpty { exchange.responseID = id }
        exchange.outputJSON = response.serialized
        var text = ""
        var calls: [ToolCall] = []
        for item in response["output"]?.array ?? [] {
            switch item["type"]?.string {
            case "message":
                for part in item["content"]?.array ?? [] where part["type"]?.string == "output_text" {
                    text += part["text"]?.string ?? ""
                }
            case "function_call":
                guard let name = item["name"]?.string else { continue }
                calls.append(ToolCall(id: item["call_id"]?.string ?? item["id"]?.string, name: name,
                                      arguments: item["arguments"]?.string ?? ""))
            case "custom_tool_call":
                guard let name = item["name"]?.string else { continue }
                calls.append(ToolCall(id: item["call_id"]?.string ?? item["id"]?.string, name: name,
                                      arguments: item["input"]?.string ?? ""))
            default:
                continue
            }
        }
        exchange.assistantText = text.isEmpty ? nil : text
        exchange.toolCalls = calls
        exchange.finishReason = response["status"]?.string
        if let error = ChatPayloadInterpreter.errorDescription(response["error"]) { exchange.error = error }
        exchange.usage = usage(response["usage"])
        return exchange
    }

    /// `{"input_tokens","input_tokens_details":{"cached_tokens"},"output_tokens","total_tokens"}`.
    static func usage(_ usage: PayloadJSON?) -> TokenUsage? {
        guard let usage, usage.isObject else { return nil }
        let input = usage["input_tokens"]?.int
        let output = usage["output_tokens"]?.int
        guard input != nil || output != nil else { return nil }
        return TokenUsage(inputTokens: input ?? 0, outputTokens: output ?? 0, totalTokens: usage["total_tokens"]?.int,
                          cacheReadInputTokens: usage["input_tokens_details"]?["cached_tokens"]?.int)
    }

    /// `input` as a string, or the last user message of an input list (string content or `input_text` parts).
    static func lastUserText(input: PayloadJSON) -> String? {
        switch input {
        case let .string(text): return text
        case let .array(items):
            for item in items.reversed() where item["role"]?.string == "user" {
                let type = item["type"]?.string
                guard type == nil || type == "message" else { continue }
                if let text = ChatPayloadInterpreter.textOfContent(item["content"]) { return text }
            }
            return nil
        default: return nil
        }
    }
}

/// Assembles a Responses stream. The `response` of `response.completed` (or `.incomplete`, `.failed`)
/// is the full final object and is used when present; otherwise the object is rebuilt from the
/// `response.created` snapshot and the output items, their content parts, text deltas and function
/// call argument deltas (a `.done` event's full value replaces the deltas).
struct OpenAIResponsesStream: Sendable {
    struct Part: Sendable {
        var contentIndex: Int
        var part: PayloadJSON
        /// "text" for output_text parts, "refusal" for refusals.
        var textKey: String
        var text = ""
    }

    struct Item: Sendable {
        var outputIndex: Int
        var item: PayloadJSON
        var parts: [Part] = []
        var arguments = ""
        var hasArguments = false
        var done: PayloadJSON?
    }

    private(set) var completed = false
    private var snapshot: PayloadJSON?
    private var final: PayloadJSON?
    private var items: [Item] = []
    private var error: String?

    /// Consumes one event; returns whether it was a Responses event.
    mutating func consume(_ event: SSEEvent, notes: inout StreamNotes) -> Bool {
        guard let data = notes.jsonObject(of: event) else { return false }
        guard let type = data["type"]?.string ?? event.event else { return false }
        switch type {
        case "response.created", "response.in_progress", "response.queued":
            if let response = data["response"], response.isObject { snapshot = response }
        case "response.completed", "response.incomplete":
            if let response = data["response"], response.isObject { final = response }
            completed = true
        case "response.failed":
            if let response = data["response"], response.isObject { final = response }
            error = ChatPayloadInterpreter.errorDescription(data["response"]?["error"]) ?? "response failed"
        case "error":
            let message = data["message"]?.string ?? data["error"]?["message"]?.string ?? "error"
            if let code = data["code"]?.string ?? data["error"]?["code"]?.string ?? data["error"]?["type"]?.string {
                error = "\(code): \(message)"
            } else {
                error = message
            }
        case "response.output_item.added":
            let index = outputIndex(data)
            let item = data["item"] ?? .object([])
            if let slot = items.firstIndex(where: { $0.outputIndex == index }) {
                items[slot] = Item(outputIndex: index, item: item)
            } else {
                items.append(Item(outputIndex: index, item: item))
            }
        case "response.output_item.done":
            let slot = itemSlot(outputIndex(data), type: data["item"]?["type"]?.string ?? "message")
            items[slot].done = data["item"]
        case "response.content_part.added", "response.content_part.done":
            let slot = itemSlot(outputIndex(data), type: "message")
            let part = data["part"] ?? .object([])
            let partSlot = self.partSlot(slot, contentIndex: data["content_index"]?.int ?? 0,
                                         type: part["type"]?.string ?? "output_text")
            if type == "response.content_part.added" {
                items[slot].parts[partSlot].part = part
            } else if let text = part[items[slot].parts[partSlot].textKey]?.string {
                notes.replace(&items[slot].parts[partSlot].text, with: text)
            }
        case "response.output_text.delta", "response.refusal.delta":
            let slot = itemSlot(outputIndex(data), type: "message")
            let partType = type == "response.refusal.delta" ? "refusal" : "output_text"
            let partSlot = self.partSlot(slot, contentIndex: data["content_index"]?.int ?? 0, type: partType)
            notes.append(data["delta"]?.string ?? "", to: &items[slot].parts[partSlot].text)
        case "response.output_text.done", "response.refusal.done":
            let slot = itemSlot(outputIndex(data), type: "message")
            let isRefusal = type == "response.refusal.done"
            let partSlot = self.partSlot(slot, contentIndex: data["content_index"]?.int ?? 0,
                                         type: isRefusal ? "refusal" : "output_text")
            if let text = data[isRefusal ? "refusal" : "text"]?.string {
                notes.replace(&items[slot].parts[partSlot].text, with: text)
            }
        case "response.function_call_arguments.delta":
            let slot = itemSlot(outputIndex(data), type: "function_call")
            items[slot].hasArguments = true
            notes.append(data["delta"]?.string ?? "", to: &items[slot].arguments)
        case "response.function_call_arguments.done":
            let slot = itemSlot(outputIndex(data), type: "function_call")
            if let arguments = data["arguments"]?.string {
                items[slot].hasArguments = true
                notes.replace(&items[slot].arguments, with: arguments)
            }
        default:
            // Other response.* events (reasoning summaries, tool progress...) carry nothing assembled here.
            return type.hasPrefix("response.")
        }
        return true
    }

    private func outputIndex(_ data: PayloadJSON) -> Int {
        if let index = data["output_index"]?.int { return index }
        if let id = data["item_id"]?.string, let item = items.first(where: { $0.item["id"]?.string == id }) {
            return item.outputIndex
        }
        return 0
    }

    /// The item at an output index, created (of `type`) if its `output_item.added` was not seen.
    private mutating func itemSlot(_ index: Int, type: String) -> Int {
        if let found = items.firstIndex(where: { $0.outputIndex == index }) { return found }
        let item: PayloadJSON = type == "message"
            ? .object([("type", .string("message")), ("role", .string("assistant")), ("content", .array([]))])
            : .object([("type", .string(type))])
        items.append(Item(outputIndex: index, item: item))
        return items.count - 1
    }

    private mutating func partSlot(_ slot: Int, contentIndex: Int, type: String) -> Int {
        if let found = items[slot].parts.firstIndex(where: { $0.contentIndex == contentIndex }) { return found }
        let textKey = type == "refusal" ? "refusal" : "text"
        items[slot].parts.append(Part(contentIndex: contentIndex, part: .object([("type", .string(type)), (textKey, .string(""))]),
                                      textKey: textKey))
        return items[slot].parts.count - 1
    }

    /// The final (or assembled) `response` object, interpreted like a non-streamed response.
    func finish(base: ChatExchange, notes: inout StreamNotes) -> ChatExchange {
        var exchange = base
        let assembledOutput = PayloadJSON.array(items.sorted(by: { $0.outputIndex < $1.outputIndex }).map(itemJSON))
        var response: PayloadJSON
        if var final {
            if final["output"]?.array?.isEmpty ?? true, !items.isEmpty { final = final.setting("output", assembledOutput) }
            response = final
        } else if let snapshot {
            response = snapshot.setting("output", assembledOutput)
        } else if !items.isEmpty {
            response = .object([("object", .string("response")), ("output", assembledOutput)])
        } else {
            if let error { exchange.error = error } else if notes.sawEvents { notes.warn("no response object in the stream") }
            return exchange
        }
        if response["object"] == nil { response = response.setting("object", .string("response")) }
        exchange = OpenAIResponses.interpret(response: response, base: exchange) ?? exchange
        if let error { exchange.error = error }
        return exchange
    }

    private func itemJSON(_ item: Item) -> PayloadJSON {
        if let done = item.done, done.isObject { return done }
        var json = item.item.isObject ? item.item : .object([])
        if !item.parts.isEmpty {
            let parts = item.parts.sorted(by: { $0.contentIndex < $1.contentIndex }).map { part in
                (part.part.isObject ? part.part : .object([])).setting(part.textKey, .string(part.text))
            }
            json = json.setting("content", .array(parts))
        }
        if item.hasArguments {
            json = json.setting("arguments", .string(item.arguments))
        }
        return json
    }
}
