import NIOCore
import NIOHTTP1
import NIOPosix
import TracegateExport
import TracegateProxy
import TracegateTrace

/// What the tracing observer reads from requests and how much it keeps.
public struct TraceCaptureSettings: Sendable {
    /// The user and session sources that read the request head (`IdentityResolver.headSources`).
    public var userHeadSources: [IdentitySource] = [.header("X-User-ID")]
    public var sessionHeadSources: [IdentitySource] = [.header("X-Session-ID")]
    public var requestIDHeader = "X-Request-ID"
    /// Response header carrying the trace id; empty disables it.
    public var traceIDResponseHeader = "X-MLflow-Trace-Id"
    /// Bytes of each body kept for the trace (the exchange itself is never affected).
    public var maxCapturedBodyBytes = 64 * 1024
    /// Request headers copied into trace tags: (header name, tag key).
    public var headerTags: [(header: String, tag: String)] = []
    /// The upstream as shown in traces, per route (0: the default upstream, `i`: route `i - 1`'s).
    public var upstreams: [String] = [""]
    /// Share of exchanges traced (errors are kept whatever the draw).
    public var sampleRatio = 1.0
    /// A request header that forces a trace (any value but `0` or `false`).
    public var forceTraceHeader = "X-Tracegate-Force-Trace"
    /// Continue an incoming W3C `traceparent` and send one upstream naming tracegate's span.
    public var propagatesTraceContext = true
    /// Requests under this path are tracegate's own (`feedback_path`) and are not traced.
    public var untracedPath: String?

    public init() {}
}

/// Captures one exchange on its event loop: ids, header values and capped copies of both bodies.
/// Nothing is parsed here; the capture is handed off when the exchange ends.
final class TraceTap: ExchangeTap {
    let traceIDHigh: UInt64
    let traceIDLow: UInt64
    let rootSpanID: UInt64
    /// The caller's span, when the request carried a valid `traceparent`.
    let parentSpanID: UInt64?
    let upstreamHeaders: [(name: String, value: String)]
    let userHeadValues: IdentityHeadValues
    let sessionHeadValues: IdentityHeadValues
    let requestIDWasGenerated: Bool
    /// Drawn when the request arrives; an unsampled exchange is still traced if it ends in error.
    let sampled: Bool
    let headerTags: [(String, String)]
    let responseHeaders: [(name: String, value: String)]
    private let limit: Int
    private let budget: CaptureBudget
    private let startedAt = NIODeadline.now()
    private(set) var request: CapturedExchange.Body
    private(set) var response = CapturedExchange.Body()
    private var isEventStream = false
    private(set) var timeToFirstEventNanos: Int64?
    private(set) var chunkArrivals: [CapturedExchange.ChunkArrival] = []
    private(set) var lastResponseBytesNanos: Int64?
    let clientRetryCount: Int?

    init(head: RequestHead, settings: TraceCaptureSettings, budget: CaptureBudget, random: inout Xoshiro256StarStar) {
        self.budget = budget
        let headers = head.headers
        let caller = settings.propagatesTraceContext ? headers.first(name: "traceparent").flatMap(W3CTraceParent.init) : nil
        traceIDHigh = caller?.traceIDHigh ?? random.next()
        traceIDLow = caller?.traceIDLow ?? random.next()
        parentSpanID = caller?.parentSpanID
        rootSpanID = random.next() | 1  // never the invalid all-zero span id
        let header = { (name: String) in headers.first(name: name) }
        userHeadValues = IdentityHeadValues(reading: settings.userHeadSources, header: header, target: head.uri)
        sessionHeadValues = IdentityHeadValues(reading: settings.sessionHeadSources, header: header, target: head.uri)
        requestIDWasGenerated = (headers.first(name: settings.requestIDHeader) ?? "").isEmpty
        sampled =
            settings.sampleRatio >= 1
            || Self.isSampled(traceIDLow, ratio: settings.sampleRatio, forced: headers.first(name: settings.forceTraceHeader))
        clientRetryCount = Self.clientRetryCount(
            stainless: headers.first(name: "x-stainless-retry-count"), envoyAttempt: headers.first(name: "x-envoy-attempt-count"))
        headerTags = settings.headerTags.compactMap { pair in headers.first(name: pair.header).map { (pair.tag, $0) } }
        limit = settings.maxCapturedBodyBytes
        request = CapturedExchange.Body(
            contentType: headers.first(name: "content-type"), contentEncoding: headers.first(name: "content-encoding"))
        upstreamHeaders =
            settings.propagatesTraceContext
            ? [
                (
                    "traceparent",
                    W3CTraceParent.header(
                        traceIDHigh: traceIDHigh, traceIDLow: traceIDLow, spanID: UpstreamSpan.spanID(under: SpanID(value: rootSpanID)).value,
                        sampled: sampled)
                )
            ]
            : []
        if settings.traceIDResponseHeader.isEmpty || !sampled {
            responseHeaders = []
        } else {
            responseHeaders = [(settings.traceIDResponseHeader, TraceID(high: traceIDHigh, low: traceIDLow).mlflowID)]
        }
    }

    /// The draw uses the random low half of the trace id, so it costs nothing more.
    static func isSampled(_ random: UInt64, ratio: Double, forced: String?) -> Bool {
        if ratio >= 1 { return true }
        if let forced, !forced.isEmpty, forced != "0", forced.lowercased() != "false" { return true }
        return Double(random >> 11) / Double(UInt64(1) << 53) < ratio
    }

    /// The retry count the client's SDK announces: `x-stainless-retry-count` (OpenAI's and Anthropic's
    /// SDKs, 0 on the first attempt), or Envoy's `x-envoy-attempt-count` (1 on the first attempt).
    static func clientRetryCount(stainless: String?, envoyAttempt: String?) -> Int? {
        if let text = stainless { return smallCount(text) }
        if let text = envoyAttempt, let attempt = smallCount(text), attempt >= 1 {
            return attempt - 1
        }
        return nil
    }

    /// Up to 6 decimal digits; nil for anything else.
    private static func smallCount(_ text: String) -> Int? {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= 6, utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return utf8.reduce(0) { $0 * 10 + Int($1 - 0x30) }
    }

    func requestBody(_ bytes: ByteBuffer) { append(bytes, to: &request) }

    func responseHead(_ head: ResponseHead) {
        response.contentType = head.headers.first(name: "content-type")
        response.contentEncoding = head.headers.first(name: "content-encoding")
        isEventStream = ChatPayloadInterpreter.isEventStream(contentType: response.contentType)
    }

    func responseBody(_ bytes: ByteBuffer) {
        append(bytes, to: &response)
        if isEventStream && bytes.readableBytes > 0 {
            let nanos = (NIODeadline.now() - startedAt).nanoseconds
            if timeToFirstEventNanos == nil { timeToFirstEventNanos = nanos }
            lastResponseBytesNanos = nanos
            if chunkArrivals.count < CapturedExchange.maxChunkArrivals {
                if chunkArrivals.isEmpty { chunkArrivals.reserveCapacity(CapturedExchange.maxChunkArrivals) }
                chunkArrivals.append(.init(byteEnd: response.totalSize, nanos: nanos))
            }
        }
    }

    /// Keeps what the per-body limit and the shared budget allow; counts every byte. The budget is
    /// charged for the storage the body really takes: growth is decided here (doubling, up to the
    /// limit) rather than left to the array, whose spare capacity would otherwise go uncounted.
    private func append(_ bytes: ByteBuffer, to body: inout CapturedExchange.Body) {
        body.totalSize += bytes.readableBytes
        let wanted = min(limit - body.bytes.count, bytes.readableBytes)
        guard wanted > 0 else { return }
        let capacity = body.bytes.capacity
        if body.bytes.count + wanted > capacity {
            let target = min(limit, max(body.bytes.count + wanted, 2 * capacity, 1024))
            let granted = budget.reserve(target - capacity)
            guard granted > 0 else { return }
            body.bytes.reserveCapacity(capacity + granted)
            // The allocator may round up: charge what the storage really is, as the builder releases it.
            let grown = body.bytes.capacity - capacity
            if grown > granted { budget.charge(grown - granted) }
        }
        let room = min(wanted, body.bytes.capacity - body.bytes.count)
        guard room > 0 else { return }
        bytes.withUnsafeReadableBytes { raw in body.bytes.append(contentsOf: raw.prefix(room)) }
    }
}

extension CapturedExchange {
    /// What a capture's bodies hold of the `CaptureBudget`: their storage, as `TraceTap` charged it.
    static func bodyStorage(_ request: Body, _ response: Body) -> Int { request.bytes.capacity + response.bytes.capacity }
    var bodyStorage: Int { Self.bodyStorage(request, response) }
}

/// Turns every exchange into a `CapturedExchange` and queues it for the trace builder, off the
/// forwarding path: nothing is parsed while an exchange is forwarded. While the queue is full,
/// exchanges are not captured at all.
///
/// When an exchange ends and its event loop has no other exchange in flight, the trace is built right
/// there instead (`InPlaceTraceBuilder`), after the loop has handled the I/O it was woken for; if an
/// exchange has started by then, the capture goes to the builder thread after all.
final class TraceObserver: ExchangeObserver {
    private let settings: TraceCaptureSettings
    private let captures: CaptureQueue<CapturedExchange>
    private let budget: CaptureBudget
    private let inPlace: InPlaceTraceBuilder?
    private let loops = ThreadSpecificVariable<LoopState>()

    /// What the observer keeps per event-loop thread (a thread-specific variable), so never shared.
    private final class LoopState: @unchecked Sendable {
        var random = Xoshiro256StarStar()
        var schedule = InPlaceBuildSchedule<CapturedExchange>()
    }

    init(
        settings: TraceCaptureSettings, captures: CaptureQueue<CapturedExchange>, budget: CaptureBudget,
        inPlace: InPlaceTraceBuilder? = nil
    ) {
        self.settings = settings
        self.captures = captures
        self.budget = budget
        self.inPlace = inPlace
    }

    private var loop: LoopState {
        if let existing = loops.currentValue { return existing }
        let made = LoopState()
        loops.currentValue = made
        return made
    }

    func exchangeStarted(_ head: RequestHead, requestID: String) -> ExchangeTap? {
        let loop = self.loop
        loop.schedule.exchangeStarted()
        if let untraced = settings.untracedPath, RouteTable.path(Substring(head.uri).prefix { $0 != "?" }, startsWith: untraced) {
            return nil
        }
        guard captures.isAccepting else {
            captures.refuse()
            return nil
        }
        return TraceTap(head: head, settings: settings, budget: budget, random: &loop.random)
    }

    func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {
        let loop = self.loop
        let captured = (tap as? TraceTap).map { capture(summary, tap: $0) }
        // Where it could be built in place: this event loop, if the builder takes it.
        var builder: (loop: EventLoop, inPlace: InPlaceTraceBuilder)?
        if let captured, let inPlace, inPlace.accepts(captured), let eventLoop = MultiThreadedEventLoopGroup.currentEventLoop {
            builder = (eventLoop, inPlace)
        }
        switch loop.schedule.exchangeFinished(forwarded: summary.forwarded, capture: captured, fitsInPlace: builder != nil) {
        case nil, .wait?: return
        case .handOff?: queue(captured!)
        case .waitAndScheduleRun?:
            let (eventLoop, inPlace) = builder!  // only a capture that fits waits
            eventLoop.execute {
                let (build, handOff) = loop.schedule.run()
                for captured in build { inPlace.build(captured) }
                for captured in handOff { self.queue(captured) }
            }
        }
    }

    private func capture(_ summary: ExchangeSummary, tap: TraceTap) -> CapturedExchange {
        let outcome: CapturedExchange.Outcome
        switch summary.outcome {
        case .completed: outcome = .completed
        case .rejected(let why): outcome = .rejected(why)
        case .upstreamFailed(let why): outcome = .upstreamFailed(why)
        case .upstreamTimeout(let why): outcome = .upstreamTimeout(why)
        case .clientAborted: outcome = .clientAborted
        }
        return CapturedExchange(
            traceIDHigh: tap.traceIDHigh, traceIDLow: tap.traceIDLow, rootSpanID: tap.rootSpanID,
            method: summary.method.rawValue, target: summary.target, upstream: settings.upstreams[min(summary.route, settings.upstreams.count - 1)],
            userHeadValues: tap.userHeadValues, sessionHeadValues: tap.sessionHeadValues, requestID: summary.requestID,
            requestIDWasGenerated: tap.requestIDWasGenerated, headerTags: tap.headerTags,
            request: tap.request, response: tap.response, status: summary.status,
            startEpochNanos: summary.startedAtEpochNanos, durationNanos: summary.duration.nanoseconds,
            timeToFirstByteNanos: summary.timeToFirstByte?.nanoseconds,
            timeToFirstEventNanos: tap.timeToFirstEventNanos, outcome: outcome, sampled: tap.sampled,
            parentSpanID: tap.parentSpanID, route: summary.route,
            upstreamSentNanos: summary.sentUpstreamAfter?.nanoseconds, chunkArrivals: tap.chunkArrivals,
            lastResponseBytesNanos: tap.lastResponseBytesNanos, clientRetryCount: tap.clientRetryCount)
    }

    /// The captured bodies keep their share of the budget until the trace is built (`TracingPipeline`).
    private func queue(_ captured: CapturedExchange) {
        if !captures.offer(captured) { budget.release(captured.bodyStorage) }
    }
}

/// Several observers as one: the first tap offered wins, every observer sees every end.
public struct CompositeObserver: ExchangeObserver {
    let observers: [ExchangeObserver]

    public init(_ observers: [ExchangeObserver]) { self.observers = observers }

    public func exchangeStarted(_ head: RequestHead, requestID: String) -> ExchangeTap? {
        var tap: ExchangeTap?
        for observer in observers {
            if let offered = observer.exchangeStarted(head, requestID: requestID), tap == nil { tap = offered }
        }
        return tap
    }

    public func responseStarted(streamed: Bool) {
        for observer in observers { observer.responseStarted(streamed: streamed) }
    }

    public func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {
        for observer in observers { observer.exchangeFinished(summary, tap: tap) }
    }

    public func connectionEvent(_ event: ConnectionEvent) {
        for observer in observers { observer.connectionEvent(event) }
    }
}
