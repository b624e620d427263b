/// One finished proxied exchange described as a trace (a root span and, when the request went
/// upstream, an `UpstreamSpan` under it), independent of any
/// wire format. The encoders (`OTLPJSON`, `StartTraceV3`) turn it into MLflow requests; it is
/// also `Codable` so a spool file can hold it and `push` can re-read it.
public struct TraceRecord: Sendable, Equatable, Codable {
    /// How the exchange ended; becomes the root span status and the trace state.
    public enum Status: Sendable, Hashable, Codable {
        case ok
        /// Upstream failure or error response; the message becomes the span status message.
        case error(message: String)

        private enum CodingKeys: String, CodingKey { case code, message }

        /// Stored as `{"code":"ok"}` or `{"code":"error","message":"…"}`.
        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            switch try container.decode(String.self, forKey: .code) {
            case "ok": self = .ok
            case "error": self = .error(message: try container.decode(String.self, forKey: .message))
            case let other:
                throw DecodingError.dataCorruptedError(
                    forKey: .code, in: container, debugDescription: "unknown status \(other)")
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            switch self {
            case .ok:
                try container.encode("ok", forKey: .code)
            case .error(let message):
                try container.encode("error", forKey: .code)
                try container.encode(message, forKey: .message)
            }
        }
    }

    public var traceID: TraceID
    public var rootSpanID: SpanID
    /// The caller's span when the request carried a W3C `traceparent` (the trace continues the caller's).
    public var parentSpanID: SpanID?
    /// Root span name, e.g. `POST /v1/chat/completions`. Also the trace name (tag
    /// `mlflow.traceName`, capped at 4096) unless `tags["mlflow.traceName"]` says otherwise.
    public var name: String
    public var startTimeUnixNano: UInt64
    /// Should be ≥ start; encoders treat an earlier end as equal to the start.
    public var endTimeUnixNano: UInt64
    public var status: Status
    /// `mlflow.spanType` of the root span; see `SpanType`.
    public var spanType: SpanType
    /// Request body as JSON text (or plain text), already capped. → `mlflow.spanInputs`.
    public var inputs: String?
    /// Response (assembled if streamed) as JSON text (or plain text), already capped. → `mlflow.spanOutputs`.
    public var outputs: String?
    /// Other root-span attributes (HTTP facts, token usage, model, message format; see
    /// `TraceAttributeKey`). Keys the encoder writes from dedicated fields are ignored here.
    public var attributes: [String: AttributeValue]
    /// Already validated (`IdentityValues`). → `user.id` → metadata `mlflow.trace.user`.
    public var user: String?
    /// Already validated, ≤ 250 characters. → `session.id` → metadata `mlflow.trace.session`.
    public var session: String?
    /// Already validated, ≤ 50 characters. Only StartTraceV3 can set it.
    public var clientRequestID: String?
    /// Trace tags (static ones and copied headers). Keys MLflow would refuse and `mlflow.*` keys
    /// other than `mlflow.traceName` are left out by the encoders.
    public var tags: [String: String]
    /// Extra trace metadata, sent only with StartTraceV3 (OTLP cannot carry it).
    public var metadata: [String: String]
    /// Overrides the request preview MLflow derives from `inputs` (StartTraceV3 only).
    public var requestPreview: String?
    /// Overrides the response preview MLflow derives from `outputs` (StartTraceV3 only), e.g.
    /// for Anthropic responses, which MLflow previews as raw JSON.
    public var responsePreview: String?
    /// Root span events, e.g. `SpanEvent.exception(…)` for an upstream failure.
    public var events: [SpanEvent]
    /// The call to the upstream, under the root span; nil when the request never went upstream.
    public var upstreamSpan: UpstreamSpan?

    public init(
        traceID: TraceID,
        rootSpanID: SpanID,
        parentSpanID: SpanID? = nil,
        name: String,
        startTimeUnixNano: UInt64,
        endTimeUnixNano: UInt64,
        status: Status = .ok,
        spanType: SpanType = .unknown,
        inputs: String? = nil,
        outputs: String? = nil,
        attributes: [String: AttributeValue] = [:],
        user: String? = nil,
        session: String? = nil,
        clientRequestID: String? = nil,
        tags: [String: String] = [:],
        metadata: [String: String] = [:],
        requestPreview: String? = nil,
        responsePreview: String? = nil,
        events: [SpanEvent] = [],
        upstreamSpan: UpstreamSpan? = nil
    ) {
        self.traceID = traceID
        self.rootSpanID = rootSpanID
        self.parentSpanID = parentSpanID
        self.name = name
        self.startTimeUnixNano = startTimeUnixNano
        self.endTimeUnixNano = endTimeUnixNano
        self.status = status
        self.spanType = spanType
        self.inputs = inputs
        self.outputs = outputs
        self.attributes = attributes
        self.user = user
        self.session = session
        self.clientRequestID = clientRequestID
        self.tags = tags
        self.metadata = metadata
        self.requestPreview = requestPreview
        self.responsePreview = responsePreview
        self.events = events
        self.upstreamSpan = upstreamSpan
    }

    /// The end time, never before the start.
    var clampedEndTimeUnixNano: UInt64 { max(startTimeUnixNano, endTimeUnixNano) }
}

/// An MLflow span type (`mlflow.spanType`), e.g. `CHAT_MODEL`.
///
/// A recognised chat exchange is `.chatModel`. Anything else is `.unknown`: MLflow has no
/// autologger for plain HTTP calls, and `UNKNOWN` is the type its own `@mlflow.trace` and
/// `mlflow.start_span` give a span when nothing more is known.
public struct SpanType: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: String

    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    public static let chatModel = SpanType(rawValue: "CHAT_MODEL")
    public static let llm = SpanType(rawValue: "LLM")
    public static let embedding = SpanType(rawValue: "EMBEDDING")
    public static let unknown = SpanType(rawValue: "UNKNOWN")

    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        self.init(rawValue: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

extension TraceRecord {
    /// The model and token counts the trace reports (on its LLM span, else on its root), for metrics;
    /// nil when the payload reported no usage.
    public var reportedTokens: (model: String?, input: Int, output: Int)? {
        let attributes = upstreamSpan?.attributes ?? self.attributes
        guard case .int(let input)? = attributes["gen_ai.usage.input_tokens"],
            case .int(let output)? = attributes["gen_ai.usage.output_tokens"]
        else { return nil }
        var model: String?
        if case .string(let name)? = attributes[TraceAttributeKey.model] { model = name }
        return (model, Int(clamping: input), Int(clamping: output))
    }
}
