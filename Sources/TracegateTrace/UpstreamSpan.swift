/// The child span of a trace: the call tracegate made to the upstream, from the moment the request
/// went upstream to the end of the response. Next to the root span (the exchange as the client saw
/// it) it shows where the time went: proxy versus upstream.
///
/// For a recognised chat exchange it is the `LLM` span and carries what the model said about itself
/// (model, token usage, provider); the bodies stay on the root span, so they are stored once.
public struct UpstreamSpan: Sendable, Equatable, Codable {
    public var spanID: SpanID
    /// `METHOD /path` as sent upstream.
    public var name: String
    public var startTimeUnixNano: UInt64
    /// Should be ≥ start; encoders treat an earlier end as equal to the start.
    public var endTimeUnixNano: UInt64
    public var status: TraceRecord.Status
    /// `.llm` for a recognised chat exchange, `.unknown` otherwise.
    public var spanType: SpanType
    public var attributes: [String: AttributeValue]
    /// For streams: `first_token` and `end_of_stream`.
    public var events: [SpanEvent]

    public init(
        spanID: SpanID, name: String, startTimeUnixNano: UInt64, endTimeUnixNano: UInt64, status: TraceRecord.Status = .ok,
        spanType: SpanType = .unknown, attributes: [String: AttributeValue] = [:], events: [SpanEvent] = []
    ) {
        self.spanID = spanID
        self.name = name
        self.startTimeUnixNano = startTimeUnixNano
        self.endTimeUnixNano = endTimeUnixNano
        self.status = status
        self.spanType = spanType
        self.attributes = attributes
        self.events = events
    }

    /// The end time, never before the start.
    var clampedEndTimeUnixNano: UInt64 { max(startTimeUnixNano, endTimeUnixNano) }

    /// A time inside the span. Event times come from the tap's clock and the span's end from the
    /// exchange's, which can disagree by a fraction of a millisecond.
    func clamped(_ time: UInt64) -> UInt64 { min(max(time, startTimeUnixNano), clampedEndTimeUnixNano) }

    /// A span id derived from the root span's (splitmix64): stable, so a re-sent trace (spool, `push`)
    /// replaces the span instead of adding one, and never zero or equal to the root's.
    public static func spanID(under root: SpanID) -> SpanID {
        var z = root.value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        if z == 0 || z == root.value { z = root.value ^ 0xFFFF_FFFF_FFFF_FFFF }
        return SpanID(value: z == 0 ? 1 : z)
    }
}
