/// OpenAI Chat Completions (`POST …/chat/completions`): a `chat.completion` object, or a stream of
/// `chat.completion.chunk` objects in `data:` lines ending with `data: [DONE]`.
enum OpenAIChatCompletions {
    /// A `chat.completion` object; nil if it has no `choices` array.
    static func interpret(response: PayloadJSON, base: ChatExchange) -> ChatExchange? {
        guard let choices = response["choices"]?.array else { return nil }
        var exchange = base
        if let model = response["model"]?.string, !model.isEmpty { exchange.model = model }
        exchange.outputJSON = response.serialized
        let choice = choices.first(where: { $0["index"]?.int == 0 }) ?? choices.first
        if let choice {
            let message = choice["message"]
            if let text = ChatPayloadInterpreter.textOfContent(message?["content"]), !text.isEmpty {
                exchange.assistantText = text
            }
            exchange.toolCalls = toolCalls(of: message)
            exchange.finishReason = choice["finish_reason"]?.string
        }
        exchange.usage = usage(response["usage"])
        return exchange
    }

    /// `message.tool_calls` (and the legacy `message.function_call`).
    static func toolCalls(of message: PayloadJSON?) -> [ToolCall] {
        var calls: [ToolCall] = []
        for call in message?["tool_calls"]?.array ?? [] {
            let function = call["function"] ?? call["custom"]
            guard let name = function?["name"]?.string else { continue }
            let arguments = function?["arguments"]?.string ?? function?["input"]?.string ?? ""
            calls.append(ToolCall(id: call["id"]?.string, name: name, arguments: arguments))
        }
        if calls.isEmpty, let function = message?["function_call"], let name = function["name"]?.string {
            calls.append(ToolCall(id: nil, name: name, arguments: function["arguments"]?.string ?? ""))
        }
        return calls
    }

    /// `{"prompt_tokens","completion_tokens","total_tokens","prompt_tokens_details":{"cached_tokens"}}`.
    static func usage(_ usage: PayloadJSON?) -> TokenUsage? {
        guard let usage, usage.isObject else { return nil }
        let input = usage["prompt_tokens"]?.int
        let output = usage["completion_tokens"]?.int
        guard input != nil || output != nil else { return nil }
        return TokenUsage(inputTokens: input ?? 0, outputTokens: output ?? 0, totalTokens: usage["total_tokens"]?.int,
                          cacheReadInputTokens: usage["prompt_tokens_details"]?["cached_tokens"]?.int)
    }
}

/// Assembles a Chat Completions stream into a `chat.completion` object.
///
/// Per choice index: `delta.role`, `delta.content` and `delta.refusal` fragments concatenated,
/// `delta.tool_calls[]` merged by their `index` (`id`, `type` and `function.name` from the first
/// fragment, `function.arguments` concatenated), `finish_reason` kept. `usage` comes from the chunk
/// that carries it (with `stream_options.include_usage`, the last one, with `"choices": []`).
struct OpenAIChatStream: Sendable {
    struct ToolCallState: Sendable {
        var index: Int
        var id: String?
        var type: String?
        var name = ""
        var arguments = ""
    }

    struct Choice: Sendable {
        var index: Int
        var role: String?
        var content = ""
        var hasContent = false
        var refusal: String?
        var toolCalls: [ToolCallState] = []
        var functionCall: ToolCallState?
        var finishReason: String?
    }

    private(set) var completed = false
    private var id: PayloadJSON?
    private var created: PayloadJSON?
    private var model: String?
    private var systemFingerprint: PayloadJSON?
    private var serviceTier: PayloadJSON?
    private var choices: [Choice] = []
    private var usage: PayloadJSON?
    private var error: String?
    private var chunkCount = 0

    /// Consumes one event; returns whether it was a Chat Completions event.
    ///
    /// Read in place (`InPlaceJSON`): of a chunk only the members used are decoded, and the id, time,
    /// model and fingerprint only until the stream has given them.
    mutating func consume(_ event: SSEEvent, notes: inout StreamNotes) -> Bool {
        var data = event.data
        return data.withUTF8 { bytes in
            if Self.isDone(bytes) {
                completed = true
                return true
            }
            guard let chunk = InPlaceJSON(bytes), chunk.isObject(at: chunk.root) else {
                notes.malformedEvents += 1
                return false
            }
            return read(chunk: chunk, notes: &notes)
        }
    }

    /// `[DONE]`, with any ASCII whitespace around it.
    private static func isDone(_ data: UnsafeBufferPointer<UInt8>) -> Bool {
        let isSpace = { (byte: UInt8) in byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
        guard let first = data.firstIndex(where: { !isSpace($0) }), let last = data.lastIndex(where: { !isSpace($0) }) else { return false }
        return UnsafeBufferPointer(rebasing: data[first...last]).elementsEqual("[DONE]".utf8)
    }

    /// Offsets (`…At`) are where a member's value starts in the chunk.
    private mutating func read(chunk: InPlaceJSON, notes: inout StreamNotes) -> Bool {
        // Where a name appears twice, the last one counts (as `PayloadJSON`'s subscript reads it).
        var errorAt, choicesAt, objectAt, idAt, createdAt, modelAt, fingerprintAt, tierAt, usageAt: Int?
        for member in chunk.members(at: chunk.root) {
            if member.isNamed("choices", in: chunk) {
                choicesAt = member.valueOffset
            } else if member.isNamed("id", in: chunk) {
                idAt = member.valueOffset
            } else if member.isNamed("object", in: chunk) {
                objectAt = member.valueOffset
            } else if member.isNamed("created", in: chunk) {
                createdAt = member.valueOffset
            } else if member.isNamed("model", in: chunk) {
                modelAt = member.valueOffset
            } else if member.isNamed("system_fingerprint", in: chunk) {
                fingerprintAt = member.valueOffset
            } else if member.isNamed("service_tier", in: chunk) {
                tierAt = member.valueOffset
            } else if member.isNamed("usage", in: chunk) {
                usageAt = member.valueOffset
            } else if member.isNamed("error", in: chunk) {
                errorAt = member.valueOffset
            }
        }
        if let errorAt, let description = ChatPayloadInterpreter.errorDescription(chunk.value(at: errorAt)) {
            error = description
            return true
        }
        guard let choicesAt, chunk.isArray(at: choicesAt) else {
            return objectAt.flatMap { chunk.string(at: $0) } == "chat.completion.chunk"
        }
        chunkCount += 1
        // The first real values (Azure's first chunk, holding only prompt_filter_results, has "id":"" and "created":0).
        if id == nil, let idAt, !chunk.isNull(at: idAt) {
            let value = chunk.value(at: idAt)
            if value != .string("") { id = value }
        }
        if created == nil, let createdAt, !chunk.isNull(at: createdAt) {
            let value = chunk.value(at: createdAt)
            if value.int != 0 { created = value }
        }
        if model == nil, let modelAt, let value = chunk.string(at: modelAt), !value.isEmpty { model = value }
        if systemFingerprint == nil, let fingerprintAt, !chunk.isNull(at: fingerprintAt) { systemFingerprint = chunk.value(at: fingerprintAt) }
        if serviceTier == nil, let tierAt, !chunk.isNull(at: tierAt) { serviceTier = chunk.value(at: tierAt) }
        if let usageAt, chunk.isObject(at: usageAt) { usage = chunk.value(at: usageAt) }

        for (position, entry) in chunk.elements(at: choicesAt).enumerated() {
            var indexAt, deltaAt, finishReasonAt: Int?
            for member in chunk.members(at: entry) {
                if member.isNamed("index", in: chunk) {
                    indexAt = member.valueOffset
                } else if member.isNamed("delta", in: chunk) {
                    deltaAt = member.valueOffset
                } else if member.isNamed("finish_reason", in: chunk) {
                    finishReasonAt = member.valueOffset
                }
            }
            let slot = choiceSlot(indexAt.flatMap { chunk.int(at: $0) } ?? position)
            if let deltaAt { read(deltaAt: deltaAt, of: chunk, into: slot, notes: &notes) }
            if let finishReasonAt, let reason = chunk.string(at: finishReasonAt) { choices[slot].finishReason = reason }
        }
        return true
    }

    /// One choice's `delta`: role, content and refusal fragments, tool-call and function-call fragments.
    private mutating func read(deltaAt: Int, of chunk: InPlaceJSON, into slot: Int, notes: inout StreamNotes) {
        var roleAt, contentAt, refusalAt, toolCallsAt, functionCallAt: Int?
        for member in chunk.members(at: deltaAt) {
            if member.isNamed("content", in: chunk) {
                contentAt = member.valueOffset
            } else if member.isNamed("role", in: chunk) {
                roleAt = member.valueOffset
            } else if member.isNamed("refusal", in: chunk) {
                refusalAt = member.valueOffset
            } else if member.isNamed("tool_calls", in: chunk) {
                toolCallsAt = member.valueOffset
            } else if member.isNamed("function_call", in: chunk) {
                functionCallAt = member.valueOffset
            }
        }
        if let roleAt, let value = chunk.string(at: roleAt) { choices[slot].role = value }
        if let contentAt, let value = chunk.string(at: contentAt) {
            choices[slot].hasContent = true
            notes.append(value, to: &choices[slot].content)
        }
        if let refusalAt, let value = chunk.string(at: refusalAt) {
            var text = choices[slot].refusal ?? ""
            notes.append(value, to: &text)
            choices[slot].refusal = text
        }
        if let toolCallsAt, chunk.isArray(at: toolCallsAt) {
            for (callPosition, call) in chunk.elements(at: toolCallsAt).enumerated() {
                let call = chunk.value(at: call)
                let callIndex = call["index"]?.int ?? callPosition
                let callSlot: Int
                if let found = choices[slot].toolCalls.firstIndex(where: { $0.index == callIndex }) {
                    callSlot = found
                } else {
                    choices[slot].toolCalls.append(ToolCallState(index: callIndex))
                    callSlot = choices[slot].toolCalls.count - 1
                }
                Self.merge(call, into: &choices[slot].toolCalls[callSlot], notes: &notes)
            }
        }
        if let functionCallAt, chunk.isObject(at: functionCallAt) {
            var state = choices[slot].functionCall ?? ToolCallState(index: 0)
            Self.merge(.object([("function", chunk.value(at: functionCallAt))]), into: &state, notes: &notes)
            choices[slot].functionCall = state
        }
    }

    private mutating func choiceSlot(_ index: Int) -> Int {
        if let found = choices.firstIndex(where: { $0.index == index }) { return found }
        choices.append(Choice(index: index))
        return choices.count - 1
    }

    private static func merge(_ call: PayloadJSON, into state: inout ToolCallState, notes: inout StreamNotes) {
        if let id = call["id"]?.string, !id.isEmpty, state.id == nil { state.id = id }
        if let type = call["type"]?.string, state.type == nil { state.type = type }
        let function = call["function"]
        if let name = function?["name"]?.string, !name.isEmpty {
            // The name normally arrives whole in the first fragment; some servers repeat it.
            if state.name.isEmpty {
                state.name = name
            } else if state.name != name {
                state.name += name
            }
        }
        if let arguments = function?["arguments"]?.string {
            notes.append(arguments, to: &state.arguments)
        }
    }

    /// The assembled `chat.completion` object, interpreted like a non-streamed response.
    func finish(base: ChatExchange, notes: inout StreamNotes) -> ChatExchange {
        var exchange = base
        if let error { exchange.error = error }
        guard chunkCount > 0 else {
            if error == nil, !completed, notes.sawEvents { notes.warn("no completion chunk in the stream") }
            return exchange
        }
        let assembled = PayloadJSON.object(dropping: [
            ("id", id ?? .string("")),
            ("object", .string("chat.completion")),
            ("created", created ?? .int(0)),
            ("model", .string(model ?? base.model ?? "")),
            ("system_fingerprint", systemFingerprint),
            ("service_tier", serviceTier),
            ("choices", .array(choices.sorted(by: { $0.index < $1.index }).map(Self.choiceJSON))),
            ("usage", usage),
        ])
        exchange = OpenAIChatCompletions.interpret(response: assembled, base: exchange) ?? exchange
        for call in exchange.toolCalls where PayloadJSON.parse(call.arguments.utf8) == nil && !call.arguments.isEmpty {
            notes.warn("arguments of tool call \(call.name) are not complete JSON")
        }
        return exchange
    }

    private static func choiceJSON(_ choice: Choice) -> PayloadJSON {
        let calls = choice.toolCalls.sorted(by: { $0.index < $1.index }).map { call in
            PayloadJSON.object(dropping: [
                ("id", call.id.map(PayloadJSON.string)),
                ("type", .string(call.type ?? "function")),
                ("function", .object([("name", .string(call.name)), ("arguments", .string(call.arguments))])),
            ])
        }
        let message = PayloadJSON.object(dropping: [
            ("role", .string(choice.role ?? "assistant")),
            ("content", choice.hasContent ? .string(choice.content) : .null),
            ("refusal", choice.refusal.map(PayloadJSON.string)),
            ("tool_calls", calls.isEmpty ? nil : .array(calls)),
            ("function_call", choice.functionCall.map { call in
                .object([("name", .string(call.name)), ("arguments", .string(call.arguments))])
            }),
        ])
        return .object([
            ("index", .int(choice.index)),
            ("message", message),
            ("finish_reason", choice.finishReason.map(PayloadJSON.string) ?? .null),
        ])
    }
}
