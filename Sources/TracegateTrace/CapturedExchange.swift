/// Everything the proxy saw of one exchange, captured on the event loop and turned into a
/// `TraceRecord` later, off the forwarding path. Bodies are capped copies.
public struct CapturedExchange: Sendable {
    /// How the exchange ended, as the client saw it.
    public enum Outcome: Sendable, Equatable {
        case completed
        /// The proxy refused the request (4xx/501); the message says why.
        case rejected(String)
        case upstreamFailed(String)
        case upstreamTimeout(String)
        case clientAborted
    }

    /// A body as captured: the first `bytes` (at most the capture limit) and the real size.
    public struct Body: Sendable, Equatable {
        public var bytes: [UInt8]
        public var totalSize: Int
        public var contentType: String?
        public var contentEncoding: String?
        public var isTruncated: Bool { totalSize > bytes.count }

        public init(bytes: [UInt8] = [], totalSize: Int = 0, contentType: String? = nil, contentEncoding: String? = nil) {
            self.bytes = bytes
            self.totalSize = totalSize
            self.contentType = contentType
            self.contentEncoding = contentEncoding
        }
    }

    /// When one of the first bytes of a streamed response arrived: the response size once that chunk
    /// was added, and the time since the request head. Lets the builder tell when the first token came.
    public struct ChunkArrival: Sendable, Equatable {
        public var byteEnd: Int
        public var nanos: Int64

        public init(byteEnd: Int, nanos: Int64) {
            self.byteEnd = byteEnd
            self.nanos = nanos
        }
    }

    /// Chunk arrivals kept per event-stream response: the first token is nearly always among them.
    public static let maxChunkArrivals = 16

    /// 128-bit trace id and 64-bit root span id, chosen when the request arrived (the client gets the
    /// trace id in a response header).
    public var traceIDHigh: UInt64
    public var traceIDLow: UInt64
    public var rootSpanID: UInt64
    /// The caller's span id from a W3C `traceparent`, whose trace id this exchange then carries.
    public var parentSpanID: UInt64?
    /// The upstream that took the request, as its position in per-upstream tables: 0 for the default
    /// upstream, `i + 1` for the route configured `i`th (the data plane's `UpstreamRoute.index`).
    public var routeIndex: Int
    public var method: String
    /// The request target as the client sent it (path and query).
    public var target: String
    /// The upstream base URL the request went to.
    public var upstream: String
    /// Raw values of the user and session sources that read the request head, in the order of
    /// `IdentityResolver.headSources` (with the default sources: the `X-User-ID` / `X-Session-ID`
    /// header values); chosen and validated when the trace is built.
    public var userHeadValues: IdentityHeadValues
    public var sessionHeadValues: IdentityHeadValues
    public var requestID: String
    public var requestIDWasGenerated: Bool
    /// Request headers chosen for copying into tags: (tag key, value).
    public var headerTags: [(String, String)]
    public var request: Body
    public var response: Body
    public var status: Int?
    public var startEpochNanos: Int64
    public var durationNanos: Int64
    /// From the request head to the upstream's response head.
    public var timeToFirstByteNanos: Int64?
    /// For `text/event-stream` responses: from the request head to the first body bytes.
    public var timeToFirstEventNanos: Int64?
    /// From the request head to the moment the request head was handed to an upstream connection;
    /// nil when the request never went upstream.
    public var upstreamSentNanos: Int64?
    /// For `text/event-stream` responses: the first `maxChunkArrivals` body chunks.
    public var chunkArrivals: [ChunkArrival]
    /// For `text/event-stream` responses: from the request head to the last body bytes.
    public var lastResponseBytesNanos: Int64?
    /// The client's own retry count (`x-stainless-retry-count`, or `x-envoy-attempt-count` − 1).
    public var clientRetryCount: Int?
    public var outcome: Outcome
    /// Drawn by sampling when the request arrived; an unsampled exchange is traced only if it ends in error.
    public var sampled: Bool
    /// A turn of a WebSocket conversation: the exchange is then the tunnel's upgrade request, and the
    /// trace is this turn's (its start and duration are the turn's).
    public var webSocketTurn: WebSocketTurn?
    /// Stable per WebSocket connection: the session of its turns when the upgrade named none.
    public var webSocketConnectionID: String?

    public init(
        traceIDHigh: UInt64, traceIDLow: UInt64, rootSpanID: UInt64, method: String, target: String, upstream: String,
        userHeadValues: IdentityHeadValues = [], sessionHeadValues: IdentityHeadValues = [], requestID: String,
        requestIDWasGenerated: Bool, headerTags: [(String, String)],
        request: Body, response: Body, status: Int?, startEpochNanos: Int64, durationNanos: Int64,
        timeToFirstByteNanos: Int64?, timeToFirstEventNanos: Int64?, outcome: Outcome, sampled: Bool = true,
        parentSpanID: UInt64? = nil, routeIndex: Int = 0, upstreamSentNanos: Int64? = nil, chunkArrivals: [ChunkArrival] = [],
        lastResponseBytesNanos: Int64? = nil, clientRetryCount: Int? = nil, webSocketTurn: WebSocketTurn? = nil,
        webSocketConnectionID: String? = nil
    ) {
        self.webSocketTurn = webSocketTurn
        self.webSocketConnectionID = webSocketConnectionID
        self.traceIDHigh = traceIDHigh
        self.traceIDLow = traceIDLow
        self.rootSpanID = rootSpanID
        self.method = method
        self.target = target
        self.upstream = upstream
        self.userHeadValues = userHeadValues
        self.sessionHeadValues = sessionHeadValues
        self.requestID = requestID
        self.requestIDWasGenerated = requestIDWasGenerated
        self.headerTags = headerTags
        self.request = request
        self.response = response
        self.status = status
        self.startEpochNanos = startEpochNanos
        self.durationNanos = durationNanos
        self.timeToFirstByteNanos = timeToFirstByteNanos
        self.timeToFirstEventNanos = timeToFirstEventNanos
        self.outcome = outcome
        self.sampled = sampled
        self.parentSpanID = parentSpanID
        self.routeIndex = routeIndex
        self.upstreamSentNanos = upstreamSentNanos
        self.chunkArrivals = chunkArrivals
        self.lastResponseBytesNanos = lastResponseBytesNanos
        self.clientRetryCount = clientRetryCount
    }
}
