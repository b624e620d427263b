/// Reads a streamed (`text/event-stream`) chat response as it passes, chunk by chunk, keeping only the
/// assembled state (text, tool-call arguments, usage...), never the raw events.
///
/// The proxy feeds each body chunk as it forwards it; `eventCount` going from 0 to 1 marks the time to
/// first event. `finish()` gives the exchange understood, in the same shape as a non-streamed response.
/// Memory is bounded: each SSE event by `maxEventSize`, the assembled text and arguments together by
/// `maxAssembledBytes` (beyond it fragments are dropped, with a warning).
public struct StreamingChatAccumulator: Sendable {
    public static let defaultMaxAssembledBytes = 8 << 20

    public let request: ChatRequest
    /// SSE events dispatched so far (all of them: data chunks, pings, `[DONE]`...).
    public private(set) var eventCount = 0
    /// Events that belonged to the recognised API.
    public private(set) var recognizedEventCount = 0

    private var parser: SSEParser
    private var notes: StreamNotes
    private var chat: OpenAIChatStream?
    private var responses: OpenAIResponsesStream?
    private var anthropic: AnthropicStream?

    public init(request: ChatRequest, maxEventSize: Int = SSEParser.defaultMaxEventSize,
                maxAssembledBytes: Int = StreamingChatAccumulator.defaultMaxAssembledBytes) {
        self.request = request
        self.parser = SSEParser(maxEventSize: maxEventSize)
        self.notes = StreamNotes(budget: maxAssembledBytes)
        switch request.format {
        case .openAIChat: chat = OpenAIChatStream()
        case .openAIResponses: responses = OpenAIResponsesStream()
        case .anthropic: anthropic = AnthropicStream()
        }
    }

    /// For a request recognised as a chat exchange (see `ChatPayloadInterpreter.recognizeRequest`); nil otherwise.
    public init?(path: String, requestBody: [UInt8], maxEventSize: Int = SSEParser.defaultMaxEventSize,
                 maxAssembledBytes: Int = StreamingChatAccumulator.defaultMaxAssembledBytes) {
        guard let request = ChatPayloadInterpreter.recognizeRequest(path: path, requestBody: requestBody) else { return nil }
        self.init(request: request, maxEventSize: maxEventSize, maxAssembledBytes: maxAssembledBytes)
    }

    /// SSE events dropped for exceeding the maximum event size.
    public var oversizedEvents: Int { parser.oversizedEvents }

    /// Whether the stream's final event ([DONE], response.completed/incomplete, message_stop) has been seen.
    public var streamCompleted: Bool {
        chat?.completed ?? responses?.completed ?? anthropic?.completed ?? false
    }

    /// Whether any output (text, reasoning or tool-call arguments) has been assembled: the first token came.
    public var hasOutput: Bool { notes.hasOutput }

    /// Feeds a chunk of the response body; returns how many events it completed.
    @discardableResult
    public mutating func feed<Bytes: Collection<UInt8>>(_ chunk: Bytes) -> Int {
        let events = parser.feed(chunk)
        for event in events {
            eventCount += 1
            notes.sawEvents = true
            let recognized: Bool
            if chat != nil {
                recognized = chat!.consume(event, notes: &notes)
            } else if responses != nil {
                recognized = responses!.consume(event, notes: &notes)
            } else {
                recognized = anthropic!.consume(event, notes: &notes)
            }
            if recognized { recognizedEventCount += 1 }
        }
        return events.count
    }

    /// Ends the stream and returns what was understood; `truncated` when the bytes fed stop short of the
    /// real body (a capture limit). nil when events arrived but none belonged to the recognised API (or an
    /// unconfirmed Anthropic-looking request got no `message_start`): not a chat stream after all.
    public mutating func finish(truncated: Bool = false) -> ChatExchange? {
        var notes = self.notes
        let discardedPartialEvent = parser.finish()
        if eventCount > 0, recognizedEventCount == 0 { return nil }
        if request.needsResponseConfirmation, anthropic?.sawMessageStart != true { return nil }

        var exchange = request.baseExchange(streamed: true)
        if chat != nil {
            exchange = chat!.finish(base: exchange, notes: &notes)
        } else if responses != nil {
            exchange = responses!.finish(base: exchange, notes: &notes)
        } else {
            exchange = anthropic!.finish(base: exchange, notes: &notes)
        }
        exchange.streamed = true
        exchange.eventCount = eventCount
        exchange.streamCompleted = streamCompleted

        if eventCount == 0 { notes.warn("no SSE event in the response") }
        if truncated {
            notes.warn("response body truncated; only the events before the cut were read")
        }
        if discardedPartialEvent { notes.warn("stream ended inside an event; that incomplete event was discarded") }
        if parser.oversizedEvents > 0 {
            notes.warn("\(parser.oversizedEvents) SSE event(s) larger than \(parser.maxEventSize) bytes dropped")
        }
        if notes.malformedEvents > 0 {
            notes.warn("\(notes.malformedEvents) SSE event(s) with malformed JSON skipped")
        }
        if notes.budgetExceeded {
            notes.warn("assembled text and arguments over \(notes.initialBudget) bytes; the rest was dropped")
        }
        if eventCount > 0, !exchange.streamCompleted {
            notes.warn("stream ended without its final event (\(request.format.finalEventName))")
        }
        exchange.warnings = notes.warnings
        return exchange
    }
}

extension ChatExchange.Format {
    var finalEventName: String {
        switch self {
        case .openAIChat: return "data: [DONE]"
        case .openAIResponses: return "response.completed"
        case .anthropic: return "message_stop"
        }
    }
}

/// Warnings and limits shared by the stream assemblers.
struct StreamNotes: Sendable {
    static let maxWarnings = 16

    private(set) var warnings: [String] = []
    var malformedEvents = 0
    /// Whether any SSE event arrived (assemblers only complain about missing parts of a non-empty stream).
    var sawEvents = false
    let initialBudget: Int
    private(set) var remainingBudget: Int
    private(set) var budgetExceeded = false
    /// Whether a non-empty fragment was ever assembled.
    private(set) var hasOutput = false

    init(budget: Int) {
        initialBudget = max(0, budget)
        remainingBudget = max(0, budget)
    }

    /// Adds a warning once (the list is bounded).
    mutating func warn(_ message: String) {
        guard warnings.count < Self.maxWarnings, !warnings.contains(message) else { return }
        warnings.append(message)
    }

    /// Appends a fragment of assembled text within the byte budget.
    mutating func append(_ fragment: String, to target: inout String) {
        let size = fragment.utf8.count
        if size > 0 { hasOutput = true }
        if size <= remainingBudget {
            target += fragment
            remainingBudget -= size
            return
        }
        budgetExceeded = true
        guard remainingBudget > 0 else { return }
        // Keep the part that fits, on a character boundary.
        var kept = Substring("")
        var used = 0
        for character in fragment {
            let width = character.utf8.count
            if used + width > remainingBudget { break }
            kept.append(character)
            used += width
        }
        target += kept
        remainingBudget = 0
    }

    /// Replaces assembled text (a `.done` event carrying the full value) within the budget.
    mutating func replace(_ target: inout String, with value: String) {
        remainingBudget += target.utf8.count
        target = ""
        append(value, to: &target)
    }

    /// The event's data as a JSON object; counts and skips malformed data.
    mutating func jsonObject(of event: SSEEvent) -> PayloadJSON? {
        guard let value = PayloadJSON.parse(event.data.utf8), value.isObject else {
            malformedEvents += 1
            return nil
        }
        return value
    }
}
