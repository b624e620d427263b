import NIOCore
import NIOHTTP1
import NIOPosix
import TracegateExport
import TracegateProxy
import TracegateTrace

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
    /// Once the upstream switched to WebSocket: the turns of the conversation, read as they pass.
    private var webSocket: WebSocketTurnTap?
    /// The check due at the open turn's quiet deadline, on the tunnel's event loop (at most one
    /// scheduled at a time: when it fires early because messages came meanwhile, it is moved).
    private var quietCheck: Scheduled<Void>?
    /// Where a finished turn's capture goes (the trace builder's queue).
    private let deliverTurn: (CapturedExchange) -> Void

    init(
        head: RequestHead, settings: TraceCaptureSettings, budget: CaptureBudget, random: inout Xoshiro256StarStar,
        deliverTurn: @escaping (CapturedExchange) -> Void = { _ in }
    ) {
        self.budget = budget
        self.deliverTurn = deliverTurn
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

    func tunnelOpened(_ head: ResponseHead, request: RequestHead, requestID: String, route: UpstreamRoute) {
        let extensions = head.headers.first(name: "sec-websocket-extensions")
        let target = request.uri
        webSocket = WebSocketTurnTap(
            tracker: WebSocketTurnTracker(
                compressed: WebSocketTurnTracker.negotiatesCompression(extensions), target: target, keptBytes: limit),
            route: route.index, method: request.method.rawValue, target: target, requestID: requestID, budget: budget)
    }

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

    func tunnelBytes(_ bytes: ByteBuffer, fromClient: Bool) {
        guard let webSocket else { return }
        var ended = webSocket.read(bytes, fromClient: fromClient)
        ended.reverse()
        while let turn = ended.popLast() { deliver(turn, of: webSocket) }  // moved out in order, not copied
        if quietCheck == nil { scheduleQuietCheck(webSocket) }
    }

    /// A generic protocol's turn is traced once the server has answered and nothing passed for a
    /// while (`WebSocketTurnTracker.quietNanos`): its trace does not wait for the client's next message.
    private func scheduleQuietCheck(_ webSocket: WebSocketTurnTap) {
        guard let deadline = webSocket.quietDeadline, let tunnelLoop = MultiThreadedEventLoopGroup.currentEventLoop else { return }
        quietCheck = tunnelLoop.scheduleTask(deadline: deadline) { [weak self] in
            guard let self, let webSocket = self.webSocket else { return }
            self.quietCheck = nil
            if let turn = webSocket.endQuietTurn() {
                self.deliver(turn, of: webSocket)
            } else {
                self.scheduleQuietCheck(webSocket)  // messages came meanwhile: the deadline moved
            }
        }
    }

    /// The tunnel closed: its open turn, if any, is traced (an ERROR trace when it was cut mid-answer).
    func tunnelClosed(_ figures: TunnelFigures, outcome: ExchangeOutcome) {
        guard let webSocket else { return }
        self.webSocket = nil
        quietCheck?.cancel()
        quietCheck = nil
        let why: String
        if figures.closedIdle {
            why = "closed by tracegate after websocket_idle_timeout"
        } else if figures.closedStalled {
            why = "closed by tracegate: the upstream took nothing for send_timeout"
        } else if figures.closedAtShutdown {
            why = "closed by tracegate at shutdown"
        } else if case .upstreamFailed(let reason) = outcome {
            why = "the upstream connection failed: \(reason)"
        } else {
            why = "the connection closed without a close handshake"
        }
        if let turn = webSocket.finish(why: why) { deliver(turn, of: webSocket) }
    }

    /// A finished turn as its own capture: fresh trace ids, the upgrade's identity, its share of the budget.
    private func deliver(_ turn: consuming WebSocketTurn, of webSocket: WebSocketTurnTap) {
        // Sampling is drawn once per connection; a turn that failed is traced whatever the draw.
        guard sampled || turn.failure != nil else { return }
        let storage = turn.storage
        let granted = budget.reserve(storage)
        if granted < storage {
            budget.release(granted)
            turn.dropTexts(because: "tracegate's capture budget was spent: message texts not kept")
        }
        deliverTurn(
            CapturedExchange(
                traceIDHigh: webSocket.random.next(), traceIDLow: webSocket.random.next(), rootSpanID: webSocket.random.next() | 1, method: webSocket.method,
                target: webSocket.target, upstream: "" /* named by the observer, which has the route table */, userHeadValues: userHeadValues, sessionHeadValues: sessionHeadValues,
                requestID: webSocket.requestID, requestIDWasGenerated: requestIDWasGenerated, headerTags: headerTags, request: .init(),
                response: .init(), status: 101, startEpochNanos: webSocket.openedAtEpochNanos + turn.startNanos,
                durationNanos: max(0, turn.endNanos - turn.startNanos), timeToFirstByteNanos: nil, timeToFirstEventNanos: nil,
                outcome: turn.failure == nil ? .completed : .clientAborted, sampled: sampled, routeIndex: webSocket.route,
                clientRetryCount: clientRetryCount, webSocketTurn: turn, webSocketConnectionID: webSocket.connectionID))
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
    var bodyStorage: Int { Self.bodyStorage(request, response) + (webSocketTurn?.storage ?? 0) }
}
