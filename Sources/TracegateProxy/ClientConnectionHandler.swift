import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Immutable state shared by every client connection of a listener.
final class ProxyShared: Sendable {
    let configuration: ProxyConfiguration
    let requestRewriter: RequestHeadRewriter
    let responseRewriter: ResponseHeadRewriter
    let observer: ExchangeObserver?

    init(configuration: ProxyConfiguration, observer: ExchangeObserver?) {
        self.configuration = configuration
        self.requestRewriter = RequestHeadRewriter(configuration: configuration)
        self.responseRewriter = ResponseHeadRewriter(requestIDHeader: configuration.requestIDHeader)
        self.observer = observer
    }
}

/// Sent down a client pipeline to start a graceful close: finish the current exchange, then close.
struct QuiesceEvent {}

/// The proxy's per-client-connection handler: forwards each request to a pooled upstream connection
/// on the same event loop and streams the response back, part by part.
///
/// Bytes are never buffered beyond what is in flight: client reads are held while the upstream is not
/// writable (or not yet connected), and upstream reads are held while the client is not writable.
/// Responses are flushed on the upstream's `channelReadComplete`, so each SSE event the upstream sends
/// reaches the client as soon as it arrives. Pipelined requests wait in a small queue (reads stop
/// when it is full) and are started in order once the current exchange ends.
final class ClientConnectionHandler: ChannelDuplexHandler, UpstreamOwner {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Pipelined request parts held before reads stop.
    private static let maxQueuedParts = 64

    private let shared: ProxyShared
    private let pool: UpstreamPool
    private var context: ChannelHandlerContext!
    private var clientIP: String?
    private var requestIDs = RequestIDGenerator()

    private var exchange: Exchange?
    private var queued = CircularBuffer<HTTPServerRequestPart>()
    private var readPending = false
    private var upstreamNeedsFlush = false
    private var clientNeedsFlush = false
    /// No new exchange starts; the connection closes once the current one ends.
    private var closing = false
    private var idleSince = NIODeadline.uptimeNanoseconds(0)
    private var timer: Scheduled<Void>?
    private var timerDeadline = NIODeadline.distantFuture

    private var configuration: ProxyConfiguration { shared.configuration }

    init(shared: ProxyShared, pool: UpstreamPool) {
        self.shared = shared
        self.pool = pool
    }

    // MARK: Client channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { connectionBecameActive(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        connectionBecameActive(context: context)
        context.fireChannelActive()
    }

    private func connectionBecameActive(context: ChannelHandlerContext) {
        guard clientIP == nil else { return }
        clientIP = context.channel.remoteAddress?.ipAddress ?? ""
        idleSince = context.eventLoop.now
        armTimer(by: idleSince + configuration.clientKeepaliveTimeout)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if closing && exchange == nil { return }  // an answered request's leftovers, or a closing connection
        if exchange == nil && queued.isEmpty {
            handle(part)
        } else if let exchange, queued.isEmpty, !exchange.requestComplete {
            handle(part)
        } else {
            queued.append(part)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if upstreamNeedsFlush, let upstream = exchange?.upstream {
            upstreamNeedsFlush = false
            upstream.flush()
        }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if shouldHoldClientReads {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let exchange {
            exchange.lastActivity = context.eventLoop.now
            exchange.upstream?.handler.resumeReading()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimer()
        closing = true
        if let exchange {
            if let upstream = exchange.upstream {
                exchange.upstream = nil
                upstream.handler.owner = nil
                upstream.channel.close(promise: nil)
            }
            finish(exchange, outcome: .clientAborted)
        }
        queued.removeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let parserError = error as? HTTPParserError {
            let proxyError: ProxyError =
                parserError == .headerOverflow ? .headersTooLarge : .malformedRequest(Self.describe(parserError))
            closing = true
            queued.removeAll()
            if let exchange {
                fail(exchange, with: proxyError)
            } else {
                respondWithoutExchange(proxyError)
            }
        } else {
            // I/O errors (reset, broken pipe): nothing can be sent any more.
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is QuiesceEvent {
            closing = true
            if exchange == nil { context.close(promise: nil) }
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            // The client half-closed: finish nothing new, close once the current response is out.
            closing = true
            if exchange == nil { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: Request side

    private func handle(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            startExchange(head)
        case .body(let buffer):
            guard let exchange, !exchange.discardingRequest else { return }
            exchange.requestBodyBytes += buffer.readableBytes
            exchange.lastActivity = context.eventLoop.now
            if let limit = configuration.maxBodyBytes, exchange.requestBodyBytes > limit {
                fail(exchange, with: .bodyTooLarge(limit: limit))
                return
            }
            exchange.tap?.requestBody(buffer)
            forward(.body(.byteBuffer(buffer)), of: exchange)
        case .end(let trailers):
            guard let exchange else { return }
            exchange.requestComplete = true
            if exchange.discardingRequest { return }
            let now = context.eventLoop.now
            exchange.requestEndedAt = now
            exchange.lastActivity = now
            forward(.end(trailers), of: exchange)
            if let upstream = exchange.upstream {
                upstreamNeedsFlush = false
                upstream.flush()
            }
            armTimer(by: now + configuration.firstByteTimeout)
            resumeClientReadsIfPossible()
        }
    }

    private func startExchange(_ head: HTTPRequestHead) {
        if let rejection = Self.validate(head, maxBodyBytes: configuration.maxBodyBytes) {
            closing = true
            respondWithoutExchange(rejection, requestHead: head)
            return
        }
        guard let upstreamRequest = shared.requestRewriter.rewrite(head, clientIP: clientIP, ids: &requestIDs) else {
            closing = true
            respondWithoutExchange(.malformedRequest("invalid request target"), requestHead: head)
            return
        }
        let tap = shared.observer?.exchangeStarted(head, requestID: upstreamRequest.requestID)
        let exchange = Exchange(
            clientHead: head, upstreamRequest: upstreamRequest, now: context.eventLoop.now,
            // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request means faulty framing; close after it.
            keepClientAlive: head.isKeepAlive && !closing && !(head.version.minor == 0 && head.headers.hasTransferEncoding),
            tap: tap
        )
        self.exchange = exchange
        armTimer(by: exchange.lastActivity + configuration.idleTimeout)
        if let connection = pool.takeIdle() {
            attach(connection, to: exchange)
        } else {
            connect(exchange)
        }
    }

    /// Refusals decided from the head alone (RFC 9112 §6.1 smuggling shapes, upgrades, declared size).
    static func validate(_ head: HTTPRequestHead, maxBodyBytes: Int?) -> ProxyError? {
        if head.method == .CONNECT { return .connectNotSupported }
        let hosts = head.headers[canonicalForm: "host"].count
        if hosts > 1 { return .malformedRequest("more than one Host header") }
        if hosts == 0 && head.version.major == 1 && head.version.minor >= 1 {
            return .malformedRequest("HTTP/1.1 request without a Host header")
        }
        let lengths = head.headers.contentLengthValues
        if head.headers.hasTransferEncoding && lengths.count > 0 {
            return .malformedRequest("both Content-Length and Transfer-Encoding")
        }
        if !lengths.consistent { return .malformedRequest("conflicting Content-Length values") }
        if head.headers.contains(name: "upgrade")
            && head.headers[canonicalForm: "connection"].contains(where: { $0.equalsIgnoringASCIICase("upgrade") })
        {
            return .upgradeNotSupported
        }
        if let limit = maxBodyBytes, let declared = head.headers.first(name: "content-length").flatMap({ Int($0) }),
            declared > limit
        {
            return .bodyTooLarge(limit: limit)
        }
        return nil
    }

    private func connect(_ exchange: Exchange) {
        exchange.isConnecting = true
        pool.connect().whenComplete { [self] result in
            exchange.isConnecting = false
            switch result {
            case .success(let connection):
                guard self.exchange === exchange, !exchange.discardingRequest else {
                    self.pool.release(connection)
                    return
                }
                self.attach(connection, to: exchange)
                self.armTimer(by: exchange.lastActivity + self.configuration.idleTimeout)
            case .failure(let error):
                guard self.exchange === exchange else { return }
                if case ChannelError.connectTimeout = error {
                    self.fail(exchange, with: .connectTimeout)
                } else {
                    self.fail(exchange, with: .upstreamUnreachable(Self.describe(error)))
                }
            }
        }
    }

    private func attach(_ connection: UpstreamConnection, to exchange: Exchange) {
        connection.handler.owner = self
        exchange.upstream = connection
        connection.write(.head(exchange.upstreamRequest.head))
        for part in exchange.pendingParts { connection.write(part) }
        exchange.pendingParts.removeAll()
        connection.flush()
        if exchange.requestComplete {
            exchange.requestEndedAt = exchange.requestEndedAt ?? context.eventLoop.now
            armTimer(by: exchange.requestEndedAt! + configuration.firstByteTimeout)
        }
        resumeClientReadsIfPossible()
    }

    private func forward(_ part: HTTPClientRequestPart, of exchange: Exchange) {
        if let upstream = exchange.upstream {
            upstream.write(part)
            upstreamNeedsFlush = true
        } else {
            exchange.pendingParts.append(part)
        }
    }

    // MARK: Upstream side (UpstreamOwner)

    var mayReadUpstream: Bool { context.channel.isWritable }

    func upstreamRead(_ part: HTTPClientResponsePart) {
        guard let exchange else { return }
        switch part {
        case .head(let head):
            if head.status.code < 200 && head.status.code != 101 {
                var informational = head
                HopByHop.strip(&informational.headers)
                informational.version = exchange.clientHead.version
                context.write(wrapOutboundOut(.head(informational)), promise: nil)
                clientNeedsFlush = true
                return
            }
            let now = context.eventLoop.now
            exchange.firstByteAt = now
            exchange.lastActivity = now
            let response = shared.responseRewriter.rewrite(
                head, requestIsHEAD: exchange.clientHead.method == .HEAD,
                clientVersion: exchange.clientHead.version,
                keepClientAlive: exchange.keepClientAlive && !closing && exchange.requestComplete,
                requestID: exchange.upstreamRequest.requestID
            )
            exchange.upstreamFraming = response.upstreamFraming
            exchange.upstreamKeepsAlive = head.isKeepAlive
            exchange.closeClientAfter = response.closeAfter
            exchange.responseStarted = true
            exchange.status = Int(head.status.code)
            var clientHead = response.head
            if let tap = exchange.tap {
                tap.responseHead(head)
                for field in tap.responseHeaders { clientHead.headers.add(name: field.name, value: field.value) }
            }
            context.write(wrapOutboundOut(.head(clientHead)), promise: nil)
            clientNeedsFlush = true
        case .body(let buffer):
            exchange.responseBodyBytes += buffer.readableBytes
            exchange.tap?.responseBody(buffer)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            clientNeedsFlush = true
        case .end(let trailers):
            if let upstream = exchange.upstream {
                exchange.upstream = nil
                if exchange.requestComplete && exchange.upstreamKeepsAlive && exchange.upstreamFraming != .untilClose {
                    pool.release(upstream)
                } else {
                    upstream.handler.owner = nil
                    upstream.channel.close(promise: nil)
                }
            }
            completeResponse(of: exchange, trailers: trailers)
        }
    }

    func upstreamReadComplete() {
        guard clientNeedsFlush else { return }
        clientNeedsFlush = false
        exchange?.lastActivity = context.eventLoop.now
        context.flush()
    }

    func upstreamWritabilityChanged() {
        resumeClientReadsIfPossible()
    }

    func upstreamClosed(_ connection: UpstreamConnection, error: Error?) {
        guard let exchange, exchange.upstream === connection else { return }
        exchange.upstream = nil
        if exchange.responseStarted {
            if exchange.upstreamFraming == .untilClose {
                completeResponse(of: exchange, trailers: nil)  // a close-delimited body ends here
            } else {
                abort(exchange, outcome: .upstreamFailed("upstream closed the connection mid-response"))
            }
        } else if connection.hasServed && exchange.isRetryable {
            // A pooled connection the upstream had already closed: try once more on a fresh one.
            exchange.hasRetried = true
            connect(exchange)
        } else if let error {
            fail(exchange, with: .upstreamUnreachable(Self.describe(error)))
        } else {
            fail(exchange, with: .upstreamClosedEarly)
        }
    }

    // MARK: Ending exchanges

    private func completeResponse(of exchange: Exchange, trailers: HTTPHeaders?) {
        clientNeedsFlush = false
        let close = exchange.closeClientAfter || closing || !exchange.requestComplete
        if close {
            closing = true
            exchange.discardingRequest = !exchange.requestComplete
            context.writeAndFlush(wrapOutboundOut(.end(trailers))).whenComplete { [context] _ in
                context!.close(promise: nil)
            }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
        }
        finish(exchange, outcome: .completed)
    }

    /// Answers `error` to the client if no response started yet; otherwise cuts the connection.
    private func fail(_ exchange: Exchange, with error: ProxyError) {
        if let upstream = exchange.upstream {
            exchange.upstream = nil
            upstream.handler.owner = nil
            upstream.channel.close(promise: nil)
        }
        exchange.pendingParts.removeAll()
        guard !exchange.responseStarted else {
            abort(exchange, outcome: error.outcome)
            return
        }
        exchange.responseStarted = true
        exchange.status = Int(error.status.code)
        if !exchange.requestComplete {
            exchange.discardingRequest = true
            closing = true
        }
        writeError(
            error, requestID: exchange.upstreamRequest.requestID, version: exchange.clientHead.version,
            extraHeaders: exchange.tap?.responseHeaders ?? [])
        finish(exchange, outcome: error.outcome)
    }

    /// Cuts a response that cannot be completed: the client sees the connection close.
    private func abort(_ exchange: Exchange, outcome: ExchangeOutcome) {
        if let upstream = exchange.upstream {
            exchange.upstream = nil
            upstream.handler.owner = nil
            upstream.channel.close(promise: nil)
        }
        closing = true
        finish(exchange, outcome: outcome)  // before closing, which reports a client abort otherwise
        context.flush()
        context.close(promise: nil)
    }

    private func respondWithoutExchange(_ error: ProxyError, requestHead: HTTPRequestHead? = nil) {
        let requestID =
            requestHead.flatMap { $0.headers.first(name: configuration.requestIDHeader) }.flatMap { $0.isEmpty ? nil : $0 }
            ?? requestIDs.generate()
        writeError(error, requestID: requestID, version: requestHead?.version ?? .http1_1)
        if let requestHead, let observer = shared.observer {
            let summary = ExchangeSummary(
                requestID: requestID, method: requestHead.method, target: requestHead.uri,
                clientAddress: clientIP, status: Int(error.status.code), requestBodyBytes: 0,
                responseBodyBytes: 0, startedAtEpochNanos: Exchange.wallClockNanos(), duration: .zero,
                timeToFirstByte: nil, outcome: error.outcome
            )
            observer.exchangeFinished(summary, tap: nil)
        }
    }

    private func writeError(
        _ error: ProxyError, requestID: String, version: HTTPVersion, extraHeaders: [(name: String, value: String)] = []
    ) {
        let body = error.jsonBody(requestID: requestID, allocator: context.channel.allocator)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "content-length", value: String(body.readableBytes))
        headers.add(name: configuration.requestIDHeader, value: requestID)
        for field in extraHeaders { headers.add(name: field.name, value: field.value) }
        if closing { headers.add(name: "connection", value: "close") }
        let head = HTTPResponseHead(version: version.major == 1 ? version : .http1_1, status: error.status, headers: headers)
        if error == .connectNotSupported {
            writeBypassingEncoder(head, body: body)
            return
        }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if closing {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [context] _ in
                context!.close(promise: nil)
            }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    /// NIO's encoder drops every body of a response to CONNECT; the refusal's body is written as raw bytes.
    private func writeBypassingEncoder(_ head: HTTPResponseHead, body: ByteBuffer) {
        var bytes = context.channel.allocator.buffer(capacity: 256 + body.readableBytes)
        bytes.writeString("HTTP/\(head.version.major).\(head.version.minor) \(head.status.code) \(head.status.reasonPhrase)\r\n")
        for (name, value) in head.headers { bytes.writeString("\(name): \(value)\r\n") }
        bytes.writeStaticString("\r\n")
        bytes.writeImmutableBuffer(body)
        guard let encoder = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self) else {
            context.close(promise: nil)
            return
        }
        encoder.writeAndFlush(NIOAny(IOData.byteBuffer(bytes))).whenComplete { [context] _ in
            context!.close(promise: nil)
        }
    }

    private func finish(_ exchange: Exchange, outcome: ExchangeOutcome) {
        guard self.exchange === exchange else { return }
        self.exchange = nil
        shared.observer?.exchangeFinished(exchange.summary(clientAddress: clientIP, outcome: outcome, now: context.eventLoop.now), tap: exchange.tap)
        if exchange.discardingRequest && !exchange.requestComplete {
            // The rest of this request's body is still arriving; the connection closes after the error.
            queued.removeAll()
            return
        }
        if closing {
            queued.removeAll()
            return
        }
        idleSince = context.eventLoop.now
        armTimer(by: idleSince + configuration.clientKeepaliveTimeout)
        while self.exchange == nil || self.exchange?.requestComplete == false, let part = queued.popFirst() {
            handle(part)
            if closing { queued.removeAll() }
        }
        resumeClientReadsIfPossible()
    }

    // MARK: Backpressure

    private var shouldHoldClientReads: Bool {
        if queued.count >= Self.maxQueuedParts { return true }
        guard let exchange, !exchange.requestComplete else { return false }
        guard let upstream = exchange.upstream else { return exchange.isConnecting }
        return !upstream.channel.isWritable
    }

    private func resumeClientReadsIfPossible() {
        guard readPending, !shouldHoldClientReads else { return }
        readPending = false
        context.read()
    }

    // MARK: Timeouts

    /// One timer per connection: it fires at the earliest deadline seen and re-arms itself lazily,
    /// so a fast exchange costs no timer operations at all.
    private func armTimer(by deadline: NIODeadline) {
        guard deadline < timerDeadline else { return }
        timer?.cancel()
        timerDeadline = deadline
        timer = context.eventLoop.scheduleTask(deadline: deadline) { [self] in
            self.timer = nil
            self.timerDeadline = .distantFuture
            self.timerFired()
        }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
        timerDeadline = .distantFuture
    }

    private func timerFired() {
        guard context.channel.isActive else { return }
        let now = context.eventLoop.now
        if let exchange {
            guard let deadline = exchange.deadline(
                firstByteTimeout: configuration.firstByteTimeout, idleTimeout: configuration.idleTimeout)
            else {
                armTimer(by: now + configuration.connectTimeout)
                return
            }
            guard now >= deadline else {
                armTimer(by: deadline)
                return
            }
            if !exchange.requestComplete && !exchange.responseStarted {
                fail(exchange, with: .clientTimeout)
            } else if exchange.responseStarted {
                abort(exchange, outcome: ProxyError.idleTimeout.outcome)
            } else {
                fail(exchange, with: .firstByteTimeout)
            }
        } else {
            let deadline = idleSince + configuration.clientKeepaliveTimeout
            if now >= deadline {
                context.close(promise: nil)
            } else {
                armTimer(by: deadline)
            }
        }
    }

    // MARK: Helpers

    static func describe(_ error: Error) -> String {
        if let ioError = error as? IOError { return String(cString: strerror(ioError.errnoCode)).lowercased() }
        if let connectionError = error as? NIOConnectionError {
            let target = "\(connectionError.host):\(connectionError.port)"
            if connectionError.dnsAError != nil || connectionError.dnsAAAAError != nil {
                return "cannot resolve \(connectionError.host)"
            }
            if let first = connectionError.connectionErrors.first { return "\(describe(first.error)) (\(target))" }
            return "cannot connect to \(target)"
        }
        if let sslError = error as? NIOSSLError { return "TLS: \(sslError)" }
        if let parserError = error as? HTTPParserError {
            switch parserError {
            case .unexpectedContentLength: return "conflicting or unexpected Content-Length"
            case .unknown: return "invalid HTTP message framing"
            default: return "\(parserError)"
            }
        }
        if case ChannelError.connectTimeout = error { return "connect timeout" }
        return "\(error)"
    }
}
