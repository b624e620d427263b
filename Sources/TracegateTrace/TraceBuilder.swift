import Foundation

/// Turns what the proxy captured into a `TraceRecord`: validates the ids taken from headers,
/// understands chat payloads, and describes bodies the way MLflow shows them. Pure; runs off the
/// forwarding path.
public struct TraceBuilder: Sendable {
    /// Tags on every trace (e.g. `environment=production`).
    public var staticTags: [(String, String)]
    /// Whether a 4xx response makes the trace ERROR.
    public var errorOn4xx: Bool
    /// Whether bodies become inputs and outputs (`capture = full`) or only their sizes are kept.
    public var capturesBodies: Bool
    /// Applied to everything textual the trace holds before it leaves the builder.
    public var redaction: Redaction
    /// Recognised chat exchanges are named after their operation and model
    /// (`chat.completions gpt-4o-mini`); otherwise, and for everything else, `METHOD /path`.
    public var namesChatByOperation: Bool
    /// Where traces come from, by route (`CapturedExchange.routeIndex`; the last one serves any index beyond).
    public var sources: [TraceSource]
    /// Where the user and session come from, and whether they are pseudonymised.
    public var identity: IdentityResolver
    /// Tags each route adds to its traces, by `CapturedExchange.routeIndex`; they win over every other tag.
    public var routeTags: [[(String, String)]]

    public init(
        staticTags: [(String, String)] = [], errorOn4xx: Bool = false, capturesBodies: Bool = true, redaction: Redaction = Redaction(),
        namesChatByOperation: Bool = true, sources: [TraceSource] = [], identity: IdentityResolver = IdentityResolver(),
        routeTags: [[(String, String)]] = []
    ) {
        self.identity = identity
        self.routeTags = routeTags
        self.staticTags = staticTags
        self.errorOn4xx = errorOn4xx
        self.capturesBodies = capturesBodies
        self.redaction = redaction
        self.namesChatByOperation = namesChatByOperation
        self.sources = sources
    }

    /// Whether the exchange ended as an error trace (kept whatever the sampling).
    public func isError(_ exchange: CapturedExchange) -> Bool {
        if let turn = exchange.webSocketTurn { return turn.failure != nil }
        switch exchange.outcome {
        case .upstreamFailed, .upstreamTimeout, .clientAborted: return true
        case .completed, .rejected:
            guard let status = exchange.status else { return false }
            return status >= 500 || (errorOn4xx && (400..<500).contains(status))
        }
    }

    /// Whether the exchange gets a trace: drawn by sampling, or ended in error.
    public func traces(_ exchange: CapturedExchange) -> Bool { exchange.sampled || isError(exchange) }

    /// A trace on its own: a Responses API turn starts its own session chain.
    public func record(for exchange: CapturedExchange) -> TraceRecord {
        var chain = ResponseSessionChain(capacity: 0)
        return record(for: exchange, chain: &chain)
    }

    /// `chain` remembers the session of every Responses API response, for the turns that continue it.
    public func record(for exchange: CapturedExchange, chain: inout ResponseSessionChain) -> TraceRecord {
        if let turn = exchange.webSocketTurn { return record(for: exchange, turn: turn, chain: &chain) }
        let path = exchange.target.utf8.firstIndex(of: UInt8(ascii: "?")).map { String(exchange.target[..<$0]) } ?? exchange.target
        let start = UInt64(max(0, exchange.startEpochNanos))
        let requestName = redaction.text("\(exchange.method) \(path)")
        var record = TraceRecord(
            traceID: TraceID(high: exchange.traceIDHigh, low: exchange.traceIDLow),
            rootSpanID: SpanID(value: exchange.rootSpanID),
            parentSpanID: exchange.parentSpanID.map(SpanID.init(value:)),
            name: requestName,
            startTimeUnixNano: start,
            endTimeUnixNano: start + UInt64(max(0, exchange.durationNanos)))
        record.attributes.reserveCapacity(24)  // a chat trace's root holds about 20 before the LLM span takes some
        record.tags.reserveCapacity(staticTags.count + exchange.headerTags.count + 4)

        for (key, value) in staticTags { record.tags[key] = value }
        for (key, value) in exchange.headerTags { record.tags[key] = String(redaction.text(value).prefix(MLflowLimits.tagValue)) }

        describeSource(exchange, into: &record)
        describeHTTP(exchange, into: &record)
        let chat = describeBodies(exchange, path: path, into: &record)
        describeIdentity(exchange, chat: chat, chain: &chain, into: &record)
        describeOutcome(exchange, streamCompleted: chat?.streamCompleted ?? false, into: &record)
        describeUpstreamCall(exchange, chat: chat, name: requestName, into: &record)
        if namesChatByOperation, let chat { record.name = Self.operationName(chat) }
        if exchange.routeIndex >= 0, exchange.routeIndex < routeTags.count {
            for (key, value) in routeTags[exchange.routeIndex] { record.tags[key] = value }
        }
        return record
    }

    /// `chat.completions gpt-4o-mini`, `responses o3`, `messages claude-sonnet-4`: what the SDK's
    /// autologging calls the operation, and the model (at most 200 characters of it).
    static func operationName(_ chat: ChatExchange) -> String {
        let operation: String
        switch chat.format {
        case .openAIChat: operation = "chat.completions"
        case .openAIResponses: operation = "responses"
        case .anthropic: operation = "messages"
        }
        guard let raw = chat.model else { return operation }
        let model = IdentityValues.mayNeedTrimming(raw) ? raw.trimmingCharacters(in: .whitespacesAndNewlines) : raw
        guard !model.isEmpty else { return operation }
        return operation + " " + String(model.prefix(200))
    }

    /// User, session and client request id: chosen among the sources, pseudonymised if asked,
    /// validated; the sources that gave them are recorded. A Responses API response is remembered
    /// with its session.
    func describeIdentity(
        _ exchange: CapturedExchange, chat: ChatExchange?, chain: inout ResponseSessionChain, into record: inout TraceRecord
    ) {
        var parsedBody: PayloadJSON??
        let request = IdentityResolver.Request(
            body: {
                if parsedBody == nil { parsedBody = .some(PayloadJSON.parse(exchange.request.bytes)) }
                return parsedBody!
            },
            responseID: chat?.responseID, previousResponseID: chat?.previousResponseID)
        let user = identity.user(headValues: exchange.userHeadValues, request: request)
        let session = identity.session(headValues: exchange.sessionHeadValues, request: request, chain: chain)
        let values = IdentityValues.validate(
            user: identity.exported(user), session: identity.exported(session), requestID: exchange.requestID)
        record.user = values.user
        record.session = values.session
        record.clientRequestID = values.clientRequestID
        for (key, value) in values.tags { record.tags[key] = value }
        if !values.warnings.isEmpty {
            record.attributes["tracegate.warnings"] = .string(values.warnings.map(\.description).joined(separator: "; "))
        }
        if values.user != nil, let source = user?.source { record.attributes["tracegate.user.source"] = .string(source.description) }
        if values.session != nil, let source = session?.source {
            record.attributes["tracegate.session.source"] = .string(source.description)
        }
        // The session as exported (at most 250 characters, pseudonymised if asked): bounded memory,
        // and a turn joining it gets exactly what the earlier turns got.
        if identity.followsResponseChains, let responseID = chat?.responseID, responseID.utf8.count <= 256, let exportedSession = values.session {
            chain.remember(response: responseID, session: exportedSession)
        }
    }

    /// Where the trace came from (MLflow's Source column), the route, and the client's own retry count.
    func describeSource(_ exchange: CapturedExchange, into record: inout TraceRecord) {
        if let source = sources.isEmpty ? nil : sources[min(max(0, exchange.routeIndex), sources.count - 1)] {
            record.metadata["mlflow.source.name"] = source.name
            record.metadata["mlflow.source.type"] = source.type
            if let route = source.route {
                record.tags["tracegate.route"] = route
                record.attributes["tracegate.route"] = .string(route)
            }
        }
        if let retries = exchange.clientRetryCount {
            record.attributes["tracegate.client_retry_count"] = .int(Int64(retries))
            // Only retries are tagged, so `tags.`tracegate.retry` IS NULL` keeps one trace per turn.
            if retries > 0 { record.tags["tracegate.retry"] = String(retries) }
        }
    }

    /// The upstream call as a child span: from the request going upstream to the end of the response.
    /// A recognised chat exchange makes it the `LLM` span, and the model, token usage and provider move
    /// onto it (where MLflow's autologging puts them; counted once in the trace's totals).
    private func describeUpstreamCall(_ exchange: CapturedExchange, chat: ChatExchange?, name: String, into record: inout TraceRecord) {
        guard let sent = exchange.upstreamSentNanos else { return }
        let start = record.startTimeUnixNano
        var span = UpstreamSpan(
            spanID: UpstreamSpan.spanID(under: record.rootSpanID), name: name,
            startTimeUnixNano: min(start + UInt64(max(0, sent)), record.endTimeUnixNano),
            endTimeUnixNano: record.endTimeUnixNano, status: record.status, spanType: chat == nil ? .unknown : .llm)
        if !exchange.upstream.isEmpty { span.attributes["tracegate.upstream"] = .string(exchange.upstream) }
        if let status = exchange.status { span.attributes[TraceAttributeKey.httpResponseStatusCode] = .int(Int64(status)) }
        for key in Self.modelAttributeKeys {
            if let value = record.attributes.removeValue(forKey: key) { span.attributes[key] = value }
        }
        // Both spans render as chat in MLflow's trace view.
        if let format = record.attributes[TraceAttributeKey.messageFormat] { span.attributes[TraceAttributeKey.messageFormat] = format }
        if let chat, let piece = chat.firstOutputPiece, piece < exchange.chunkArrivals.count {
            let nanos = exchange.chunkArrivals[piece].nanos
            span.attributes["tracegate.time_to_first_token_ms"] = .double(Double(nanos) / 1e6)
            span.events.append(SpanEvent(name: "first_token", timeUnixNano: span.clamped(start + UInt64(max(0, nanos)))))
        }
        if let last = exchange.lastResponseBytesNanos {
            var event = SpanEvent(name: "end_of_stream", timeUnixNano: span.clamped(start + UInt64(max(0, last))))
            if let chat { event.attributes["tracegate.stream.completed"] = .bool(chat.streamCompleted) }
            span.events.append(event)
        }
        record.upstreamSpan = span
    }

    /// What the model says about itself: kept on the `LLM` span, not on the root.
    static let modelAttributeKeys = [
        TraceAttributeKey.model, TraceAttributeKey.tokenUsage,
        "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
        "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "tracegate.stream.events",
    ]

    private func describeHTTP(_ exchange: CapturedExchange, into record: inout TraceRecord) {
        record.attributes[TraceAttributeKey.httpRequestMethod] = .string(exchange.method)
        record.attributes[TraceAttributeKey.urlPath] = .string(
            redaction.text(identity.redactingIdentityQuery(QueryRedaction.target(exchange.target))))
        if let status = exchange.status { record.attributes[TraceAttributeKey.httpResponseStatusCode] = .int(Int64(status)) }
        if !exchange.upstream.isEmpty { record.attributes["tracegate.upstream"] = .string(exchange.upstream) }
        record.attributes["tracegate.request.bytes"] = .int(Int64(exchange.request.totalSize))
        record.attributes["tracegate.response.bytes"] = .int(Int64(exchange.response.totalSize))
        if let ttfb = exchange.timeToFirstByteNanos { record.attributes["tracegate.ttfb_ms"] = .double(Double(ttfb) / 1e6) }
        if let ttfe = exchange.timeToFirstEventNanos {
            record.attributes["tracegate.time_to_first_event_ms"] = .double(Double(ttfe) / 1e6)
        }
        record.attributes["tracegate.request_id_generated"] = .bool(exchange.requestIDWasGenerated)
        record.attributes["tracegate.request_id"] = .string(String(exchange.requestID.prefix(MLflowLimits.tagValue)))
    }

    /// Inputs and outputs (unless bodies are not captured), and what a chat payload tells: model,
    /// token usage, format. Returns the chat exchange when the payloads were recognised.
    private func describeBodies(_ exchange: CapturedExchange, path: String, into record: inout TraceRecord) -> ChatExchange? {
        if capturesBodies {
            if exchange.request.isTruncated { record.attributes["tracegate.request.truncated"] = .bool(true) }
            if exchange.response.isTruncated { record.attributes["tracegate.response.truncated"] = .bool(true) }
            record.inputs = BodyText.describe(exchange.request).map(redaction.body)
        }
        let chat =
            exchange.response.contentEncoding == nil
            ? ChatPayloadInterpreter.interpret(
                path: path, requestBody: exchange.request.bytes, responseBody: exchange.response.bytes,
                responseContentType: exchange.response.contentType, responseTruncated: exchange.response.isTruncated,
                pieceEnds: exchange.chunkArrivals.map(\.byteEnd))
            : nil
        guard let chat else {
            if capturesBodies { record.outputs = BodyText.describe(exchange.response).map(redaction.body) }
            return nil
        }
        describe(chat, into: &record)
        guard capturesBodies else { return chat }
        record.outputs = (chat.outputJSON ?? BodyText.describe(exchange.response)).map(redaction.body)
        // MLflow previews only OpenAI shapes itself; give it the texts.
        if chat.format == .anthropic { previewTexts(of: chat, into: &record) }
        return chat
    }

    /// The chat's last user text and its answer as the trace's request and response previews, for
    /// the shapes MLflow does not preview itself.
    func previewTexts(of chat: ChatExchange, into record: inout TraceRecord) {
        record.requestPreview = chat.lastUserText.map { String(redaction.text($0).prefix(MLflowLimits.preview)) }
        record.responsePreview = chat.assistantText.map { String(redaction.text($0).prefix(MLflowLimits.preview)) }
    }

    /// What a recognised chat tells, on the root span (the upstream span takes the model's part):
    /// span type, message format, model, token usage, and the same as OpenTelemetry GenAI attributes.
    func describe(_ chat: ChatExchange, into record: inout TraceRecord) {
        record.spanType = .chatModel
        record.attributes[TraceAttributeKey.messageFormat] = .string(chat.messageFormat)
        if let model = chat.model { record.attributes[TraceAttributeKey.model] = .string(model) }
        if let usage = chat.usage { record.attributes[TraceAttributeKey.tokenUsage] = .string(usage.mlflowJSON) }
        // OpenTelemetry GenAI semantic conventions, for OpenTelemetry backends (MLflow reads its own keys first).
        record.attributes["gen_ai.operation.name"] = .string("chat")
        record.attributes["gen_ai.provider.name"] = .string(chat.messageFormat)
        if let model = chat.model { record.attributes["gen_ai.request.model"] = .string(model) }
        if let usage = chat.usage {
            record.attributes["gen_ai.usage.input_tokens"] = .int(Int64(usage.inputTokens))
            record.attributes["gen_ai.usage.output_tokens"] = .int(Int64(usage.outputTokens))
        }
        if chat.streamed { record.attributes["tracegate.stream.events"] = .int(Int64(chat.eventCount)) }
        if !chat.warnings.isEmpty { record.attributes["tracegate.chat.warnings"] = .string(chat.warnings.joined(separator: "; ")) }
    }

    /// A client that closes right after a stream's own end marker (`[DONE]`, `message_stop`,
    /// `response.completed`) got the whole answer: SDKs commonly stop reading there, before the
    /// HTTP body's last chunk. That is a completed exchange, not an abort.
    private func describeOutcome(_ exchange: CapturedExchange, streamCompleted: Bool, into record: inout TraceRecord) {
        let end = record.endTimeUnixNano
        func fail(_ type: String, _ message: String, status: String? = nil) {
            record.status = .error(message: status ?? message)
            record.events.append(.exception(type: type, message: message, timeUnixNano: end))
        }
        // Every ERROR trace gets an `exception` event: MLflow's trace view shows the span red by it.
        switch exchange.outcome {
        case .completed:
            if isError(exchange), let status = exchange.status {
                fail("HTTPError", "the upstream answered HTTP \(status)", status: "HTTP \(status)")
            }
        case .rejected(let why):
            if isError(exchange), let status = exchange.status {
                fail("RequestRejected", "tracegate answered HTTP \(status): \(why)", status: "HTTP \(status)")
            }
        case .upstreamFailed(let why): fail("UpstreamError", why)
        case .upstreamTimeout(let why): fail("UpstreamTimeout", why)
        case .clientAborted where streamCompleted:
            record.attributes["tracegate.client_closed_after_stream_end"] = .bool(true)
        case .clientAborted: fail("ClientAborted", "the client disconnected before the response was complete")
        }
    }
}

/// How a captured body appears as span inputs/outputs: JSON as JSON, text as text, anything
/// else as a short note with its size.
enum BodyText {
    static func describe(_ body: CapturedExchange.Body) -> String? {
        guard body.totalSize > 0 else { return nil }
        if let encoding = body.contentEncoding, ASCIIText.lowercased(encoding) != "identity" {
            return note(["compressed": .string(encoding), "size": .int(Int64(body.totalSize))], body)
        }
        guard isTextual(body.contentType), let text = String(validating: body.bytes, as: UTF8.self) else {
            return note(["binary": .bool(true), "size": .int(Int64(body.totalSize))], body)
        }
        if body.isTruncated {
            return text + "… [truncated: \(body.totalSize) bytes in all]"
        }
        return text
    }

    private static func isTextual(_ contentType: String?) -> Bool {
        guard let contentType else { return true }  // untyped: decide by UTF-8 validity
        let type = ASCIIText.lowercased(contentType)
        return type.hasPrefix("text/") || ASCIIText.contains(type, "json") || ASCIIText.contains(type, "xml")
            || ASCIIText.contains(type, "x-www-form-urlencoded") || ASCIIText.contains(type, "javascript")
    }

    private static func note(_ fields: [String: AttributeValue], _ body: CapturedExchange.Body) -> String {
        var object: [String: Any] = [:]
        for (key, value) in fields {
            switch value {
            case .string(let s): object[key] = s
            case .int(let i): object[key] = i
            case .bool(let b): object[key] = b
            case .double(let d): object[key] = d
            }
        }
        if let type = body.contentType { object["content_type"] = type }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
