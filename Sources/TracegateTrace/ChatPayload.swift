/// What tracegate understood of a chat exchange; nil fields were not present.
public struct ChatExchange: Sendable, Equatable {
    public enum Format: String, Sendable {
        case openAIChat = "openai"
        case openAIResponses = "openai-responses"
        case anthropic
    }

    public var format: Format
    /// Value for MLflow's `mlflow.message.format`: "openai" for both OpenAI APIs, "anthropic" for Anthropic.
    public var messageFormat: String
    /// The model the response names (else the one the request asked for).
    public var model: String?
    public var streamed: Bool
    /// The final response as one JSON object in the API's own non-streamed shape (for a stream: assembled),
    /// serialized (UTF-8 JSON text). When the API answered with an error object instead, that object.
    /// For Anthropic also see `openAIShapedOutput`.
    public var outputJSON: String?
    /// Anthropic only: the same output as an OpenAI `chat.completion` object (text content, `tool_calls`
    /// with arguments as JSON text, `finish_reason`, usage as prompt/completion/total tokens).
    public var openAIShapedOutput: String?
    /// The assistant's text (concatenated text parts), used as the response preview.
    public var assistantText: String?
    /// The last user message's text, used as the request preview.
    public var lastUserText: String?
    public var usage: TokenUsage?
    /// Tool calls assembled (name + arguments JSON text), in order.
    public var toolCalls: [ToolCall]
    /// Why generation stopped: `finish_reason` (Chat Completions), `stop_reason` (Anthropic) or the
    /// response `status` (Responses: "completed", "incomplete", "failed"...).
    public var finishReason: String?
    /// The error the API reported (an error body, an `error` event, a failed response), as "type: message".
    public var error: String?
    /// For streams: number of SSE events seen, and whether the stream ended properly ([DONE], response.completed, message_stop).
    public var eventCount: Int
    public var streamCompleted: Bool
    /// Anything that made the result partial (malformed JSON event, truncated body...), human-readable.
    public var warnings: [String]
    /// For streams read in pieces (`interpret(…, pieceEnds:)`): the index of the piece that brought
    /// the first output; nil when none of the pieces did.
    public var firstOutputPiece: Int?
    /// Responses API: this response's id, and the earlier response the request continued
    /// (`previous_response_id`); they chain the turns of a conversation into one session.
    public var responseID: String?
    public var previousResponseID: String?

    public init(
        format: Format, model: String? = nil, streamed: Bool = false, outputJSON: String? = nil,
        openAIShapedOutput: String? = nil, assistantText: String? = nil, lastUserText: String? = nil,
        usage: TokenUsage? = nil, toolCalls: [ToolCall] = [], finishReason: String? = nil, error: String? = nil,
        eventCount: Int = 0, streamCompleted: Bool = false, warnings: [String] = []
    ) {
        self.format = format
        self.messageFormat = format.messageFormat
        self.model = model
        self.streamed = streamed
        self.outputJSON = outputJSON
        self.openAIShapedOutput = openAIShapedOutput
        self.assistantText = assistantText
        self.lastUserText = lastUserText
        self.usage = usage
        self.toolCalls = toolCalls
        self.finishReason = finishReason
        self.error = error
        self.eventCount = eventCount
        self.streamCompleted = streamCompleted
        self.warnings = warnings
    }
}

extension ChatExchange.Format {
    /// MLflow's `mlflow.message.format` value.
    public var messageFormat: String {
        switch self {
        case .openAIChat, .openAIResponses: return "openai"
        case .anthropic: return "anthropic"
        }
    }
}

public struct TokenUsage: Sendable, Equatable {
    public var inputTokens: Int
    public var outputTokens: Int
    public var totalTokens: Int
    /// Anthropic `cache_read_input_tokens`; OpenAI cached prompt tokens (`prompt_tokens_details.cached_tokens`,
    /// `input_tokens_details.cached_tokens`). Not part of `mlflowJSON`.
    public var cacheReadInputTokens: Int?
    /// Anthropic `cache_creation_input_tokens`. Not part of `mlflowJSON`.
    public var cacheCreationInputTokens: Int?

    /// `totalTokens` defaults to input + output (saturating: the counts come from the upstream's payload,
    /// and a hostile or broken one must not make the sum trap).
    public init(inputTokens: Int, outputTokens: Int, totalTokens: Int? = nil,
                cacheReadInputTokens: Int? = nil, cacheCreationInputTokens: Int? = nil) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.totalTokens = totalTokens ?? Self.saturatingSum(inputTokens, outputTokens)
        self.cacheReadInputTokens = cacheReadInputTokens
        self.cacheCreationInputTokens = cacheCreationInputTokens
    }

    static func saturatingSum(_ a: Int, _ b: Int) -> Int {
        let (sum, overflow) = a.addingReportingOverflow(b)
        guard overflow else { return sum }
        return b > 0 ? Int.max : Int.min
    }

    /// `{"input_tokens":N,"output_tokens":N,"total_tokens":N}` — always with total_tokens.
    public var mlflowJSON: String {
        "{\"input_tokens\":\(inputTokens),\"output_tokens\":\(outputTokens),\"total_tokens\":\(totalTokens)}"
    }
}

public struct ToolCall: Sendable, Equatable {
    public var id: String?
    public var name: String
    /// The arguments as JSON text (as the model produced it; for Anthropic, the `input` object serialized).
    public var arguments: String

    public init(id: String?, name: String, arguments: String) {
        self.id = id
        self.name = name
        self.arguments = arguments
    }
}

/// A request recognised as a chat exchange, with what its body tells.
public struct ChatRequest: Sendable, Equatable {
    public var format: ChatExchange.Format
    public var model: String?
    /// The request asked for a stream (`"stream": true`).
    public var streamRequested: Bool
    public var lastUserText: String?
    /// The request alone is not conclusive (an Anthropic-looking body without `max_tokens`): the response
    /// must confirm the format (`"type":"message"`, a `message_start` event).
    public var needsResponseConfirmation: Bool
    /// Responses API: `previous_response_id`.
    public var previousResponseID: String?

    public init(format: ChatExchange.Format, model: String? = nil, streamRequested: Bool = false,
                lastUserText: String? = nil, needsResponseConfirmation: Bool = false, previousResponseID: String? = nil) {
        self.previousResponseID = previousResponseID
        self.format = format
        self.model = model
        self.streamRequested = streamRequested
        self.lastUserText = lastUserText
        self.needsResponseConfirmation = needsResponseConfirmation
    }

    /// The exchange as known before any of the response is read.
    func baseExchange(streamed: Bool) -> ChatExchange {
        var exchange = ChatExchange(format: format, model: model, streamed: streamed, lastUserText: lastUserText)
        exchange.previousResponseID = previousResponseID
        return exchange
    }
}

public enum ChatPayloadInterpreter {
    /// Recognises OpenAI Chat Completions, OpenAI Responses and Anthropic Messages exchanges,
    /// streamed or not; nil for anything else (the caller traces it as a generic HTTP exchange).
    ///
    /// A truncated response (`responseTruncated`) of a recognised exchange gives a partial result with
    /// warnings: a cut JSON body is closed where it was cut, a cut stream keeps the events that were complete.
    ///
    /// `pieceEnds`: where the response body's first pieces ended (as they arrived); a stream is read
    /// piece by piece to find the one that brought the first output (`ChatExchange.firstOutputPiece`).
    public static func interpret(path: String, requestBody: [UInt8], responseBody: [UInt8],
                                 responseContentType: String?, responseTruncated: Bool,
                                 pieceEnds: [Int] = []) -> ChatExchange? {
        guard let request = recognizeRequest(path: path, requestBody: requestBody) else { return nil }
        return interpret(request: request, responseBody: responseBody,
                         responseContentType: responseContentType, responseTruncated: responseTruncated,
                         pieceEnds: pieceEnds)
    }

    /// The second half of `interpret(path:…)`, for a request already recognised.
    public static func interpret(request: ChatRequest, responseBody: [UInt8],
                                 responseContentType: String?, responseTruncated: Bool,
                                 pieceEnds: [Int] = []) -> ChatExchange? {
        switch responseKind(contentType: responseContentType, body: responseBody) {
        case .eventStream?:
            var accumulator = StreamingChatAccumulator(request: request)
            var fed = 0
            var firstOutputPiece: Int?
            for (index, end) in pieceEnds.enumerated() where end > fed {
                accumulator.feed(responseBody[fed..<min(end, responseBody.count)])
                fed = min(end, responseBody.count)
                if accumulator.hasOutput {
                    firstOutputPiece = index
                    break
                }
            }
            accumulator.feed(responseBody[fed...])
            var exchange = accumulator.finish(truncated: responseTruncated)
            exchange?.firstOutputPiece = firstOutputPiece
            return exchange
        case .json?:
            return interpretJSON(request: request, body: responseBody, truncated: responseTruncated)
        case nil:
            return nil
        }
    }

    /// Whether a `Content-Type` value is `text/event-stream` (parameters and case ignored).
    /// Allocation-free: it runs on the event loop for every traced response.
    public static func isEventStream(contentType: String?) -> Bool {
        guard var rest = contentType?.utf8[...] else { return false }
        func isBlank(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        rest = rest.drop(while: isBlank)
        for wanted in "text/event-stream".utf8 {
            guard let byte = rest.first, byte == wanted || (wanted >= UInt8(ascii: "a") && byte == wanted - 32) else { return false }
            rest = rest.dropFirst()
        }
        rest = rest.drop(while: isBlank)
        return rest.isEmpty || rest.first == UInt8(ascii: ";")
    }

    /// Recognises a chat request by its path (query ignored) and body; nil if it is not one.
    ///
    /// - `…/chat/completions` with a `messages` array: OpenAI Chat Completions.
    /// - `…/responses` with an `input` (string or array) or a `prompt`: OpenAI Responses.
    /// - `…/messages` with a `messages` array: Anthropic Messages (confirmed by `max_tokens`, else by the response).
    public static func recognizeRequest(path: String, requestBody: [UInt8]) -> ChatRequest? {
        var route = path.utf8[...]
        if let cut = route.firstIndex(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) { route = route[..<cut] }
        while route.count > 1, route.last == UInt8(ascii: "/") { route = route.dropLast() }

        let format: ChatExchange.Format
        if ASCIIText.hasSuffix(route, "/chat/completions") {
            format = .openAIChat
        } else if ASCIIText.hasSuffix(route, "/responses") {
            format = .openAIResponses
        } else if ASCIIText.hasSuffix(route, "/messages") {
            format = .anthropic
        } else {
            return nil
        }
        guard let body = PayloadJSON.parse(requestBody), body.isObject else { return nil }
        let model = body["model"]?.string
        let stream = body["stream"]?.bool ?? false

        switch format {
        case .openAIChat:
            guard let messages = body["messages"]?.array else { return nil }
            return ChatRequest(format: format, model: model, streamRequested: stream,
                               lastUserText: lastUserText(inMessages: messages))
        case .openAIResponses:
            let input = body["input"]
            switch input {
            case .string?, .array?: break
            default: guard body["prompt"]?.isObject == true else { return nil }
            }
            return ChatRequest(format: format, model: model, streamRequested: stream,
                               lastUserText: input.flatMap(OpenAIResponses.lastUserText(input:)),
                               previousResponseID: body["previous_response_id"]?.string)
        case .anthropic:
            guard let messages = body["messages"]?.array else { return nil }
            let hasMaxTokens = body["max_tokens"]?.int != nil
            return ChatRequest(format: format, model: model, streamRequested: stream,
                               lastUserText: lastUserText(inMessages: messages),
                               needsResponseConfirmation: !hasMaxTokens)
        }
    }

    // MARK: Internals

    enum ResponseKind { case eventStream, json }

    /// By content type first; for an absent or vague one, by the first bytes.
    static func responseKind(contentType: String?, body: [UInt8]) -> ResponseKind? {
        let media = contentType.map(ASCIIText.mediaType)
        if media == "text/event-stream" { return .eventStream }
        var start = 0
        if body.count >= 3, body[0] == 0xEF, body[1] == 0xBB, body[2] == 0xBF { start = 3 }
        while start < body.count, [0x20, 0x09, 0x0A, 0x0D].contains(body[start]) { start += 1 }
        let rest = body[start...]
        for prefix in ["data:", "event:", ":", "id:"] where rest.starts(with: prefix.utf8) {
            return .eventStream
        }
        if rest.first == UInt8(ascii: "{") { return .json }
        if let media, media.hasSuffix("json"), rest.isEmpty { return .json }
        return nil
    }

    static func interpretJSON(request: ChatRequest, body: [UInt8], truncated: Bool) -> ChatExchange? {
        var base = request.baseExchange(streamed: false)
        guard let parsed = PayloadJSON.parse(body, allowTruncation: truncated), parsed.value.isObject else {
            guard truncated, !request.needsResponseConfirmation else { return nil }
            base.warnings.append("response body truncated at \(body.count) bytes and not readable as JSON; output unknown")
            return base
        }
        if truncated {
            base.warnings.append(parsed.truncated
                ? "response body truncated at \(body.count) bytes; JSON closed where it was cut, output partial"
                : "response body reported truncated but its JSON is complete")
        }
        let response = parsed.value
        if let error = errorDescription(response["error"]) {
            // The API answered with an error object (e.g. {"error":{...}} or Anthropic's {"type":"error",...}).
            if request.needsResponseConfirmation, response["type"]?.string != "error" { return nil }
            base.error = error
            base.outputJSON = response.serialized
            return base
        }
        let result: ChatExchange?
        switch request.format {
        case .openAIChat: result = OpenAIChatCompletions.interpret(response: response, base: base)
        case .openAIResponses: result = OpenAIResponses.interpret(response: response, base: base)
        case .anthropic: result = AnthropicMessages.interpret(response: response, base: base,
                                                               requireType: request.needsResponseConfirmation)
        }
        if let result { return result }
        guard truncated, !request.needsResponseConfirmation else { return nil }
        base.warnings.append("response JSON cut before the \(request.format.rawValue) fields could be read")
        return base
    }

    /// "type: message" for an error object (OpenAI `{"message","type","code"}`, Anthropic `{"type","message"}`),
    /// or the string itself; nil for null or absent.
    static func errorDescription(_ error: PayloadJSON?) -> String? {
        guard let error else { return nil }
        switch error {
        case let .string(message): return message
        case .object:
            let message = error["message"]?.string
            let type = error["type"]?.string ?? error["code"]?.string
            switch (type, message) {
            case let (type?, message?): return "\(type): \(message)"
            case let (nil, message?): return message
            case let (type?, nil): return type
            case (nil, nil): return error.serialized
            }
        default: return nil
        }
    }

    /// The text of the last `user` message that has text (string content, or its text parts joined with
    /// "\n"); user messages carrying only tool results are skipped.
    static func lastUserText(inMessages messages: [PayloadJSON]) -> String? {
        for message in messages.reversed() where message["role"]?.string == "user" {
            if let text = textOfContent(message["content"]) { return text }
        }
        return nil
    }

    /// String content, or the `text` of its parts of type text/input_text (joined with "\n").
    static func textOfContent(_ content: PayloadJSON?) -> String? {
        switch content {
        case let .string(text)?: return text
        case let .array(parts)?:
            let texts = parts.compactMap { part -> String? in
                if case let .string(text) = part { return text }
                switch part["type"]?.string {
                case "text", "input_text", "output_text": return part["text"]?.string
                default: return nil
                }
            }
            return texts.isEmpty ? nil : texts.joined(separator: "\n")
        default: return nil
        }
    }
}
