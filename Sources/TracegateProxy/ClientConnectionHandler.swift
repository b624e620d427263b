import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The proxy's per-client-connection handler: reads HTTP/1 requests straight from the socket's bytes,
/// forwards each to a pooled upstream connection on the same event loop and streams the response back.
///
/// Heads are parsed in place and rewritten by copying the client's bytes; bodies pass through as
/// slices of the bytes read (chunked bodies are re-framed). Nothing is buffered beyond what is in
/// flight: client reads are held while the upstream is not writable (or not yet connected), and
/// upstream reads are held while the client is not writable. Responses are flushed on the upstream's
/// `channelReadComplete`, so each SSE event the upstream sends reaches the client as soon as it arrives.
/// A pipelined request waits, unparsed, until the current exchange ends (reads stop meanwhile).
/// When the upstream answers a WebSocket upgrade with `101`, the exchange becomes a tunnel: bytes pass
/// both ways as they come, with the same backpressure, until both sides finish or either closes.
final class ClientConnectionHandler: ChannelDuplexHandler, UpstreamOwner {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let crlf = ByteBuffer(string: "\r\n")
    /// Response chunks up to this size are re-framed by copying them into one buffer.
    private static let maxCopiedChunk = 4096

    private let shared: ProxyShared
    /// This event loop's pools and request ids.
    private let loop: LoopShared
    private var context: ChannelHandlerContext!
    /// The channel's allocator, kept: `context.channel` costs a trip through the pipeline each time.
    private var allocator = ByteBufferAllocator()
    private var clientIP: String?
    private var headParser: HeadParser

    private var exchange: Exchange?
    /// Bytes read from the client and not yet consumed.
    private var inbound: ByteBuffer?
    private var isProcessingInbound = false
    /// Reads the current request's body; nil between bodies.
    private var requestBody: BodyReader?
    private var readPending = false
    private var upstreamNeedsFlush = false
    private var clientNeedsFlush = false
    /// Waiting, reading a head, serving an exchange or closing: decides the connection's timeouts
    /// and whether it goes on after an exchange.
    private var connection = ClientConnectionStateMachine(acceptedAt: .uptimeNanoseconds(0))
    /// The listener is shutting down (`ChannelShouldQuiesceEvent`).
    private var quiesced = false
    /// The shutdown's grace is over and the listener is closing this connection.
    private var closedByShutdown = false
    private var timer: Scheduled<Void>?
    private var timerDeadline = NIODeadline.distantFuture

    private var configuration: ProxyConfiguration { shared.configuration }

    init(shared: ProxyShared, loop: LoopShared) {
        self.shared = shared
        self.loop = loop
        self.headParser = HeadParser(
            requestIDHeader: shared.configuration.requestIDHeader, maxHeadBytes: shared.configuration.maxHeaderBytes)
    }

    // MARK: Client channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.allocator = context.channel.allocator
        if context.channel.isActive { connectionBecameActive(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        connectionBecameActive(context: context)
        context.fireChannelActive()
    }

    private func connectionBecameActive(context: ChannelHandlerContext) {
        guard clientIP == nil else { return }
        clientIP = context.channel.remoteAddress?.ipAddress ?? ""
        let now = context.eventLoop.now
        connection = ClientConnectionStateMachine(acceptedAt: now)
        armTimer(by: now + configuration.clientHeaderTimeout)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if connection.isClosing && exchange == nil { return }  // leftovers of an answered request
        var bytes = unwrapInboundIn(data)
        if inbound == nil {
            inbound = bytes
        } else {
            inbound!.writeBuffer(&bytes)
        }
        processInbound()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if upstreamNeedsFlush, let upstream = exchange?.machine.upstream {
            upstreamNeedsFlush = false
            upstream.flush()
        }
        exchange?.tapTunnelBytes()
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
        let now = context.eventLoop.now
        let writable = context.channel.isWritable
        if let deadline = connection.writabilityChanged(
            writable: writable, now: now, bufferedBytes: writable ? 0 : Self.bufferedBytes(context.channel),
            timeouts: connectionTimeouts)
        {
            armTimer(by: deadline)
        }
        if writable, let exchange {
            exchange.machine.noteActivity(now: now)
            exchange.machine.upstream?.handler.resumeReading()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimer()
        connection.closed()
        inbound = nil
        if let exchange {
            if exchange.machine.isFinished {
                // Its end was being written when the write failed and closed the connection: the
                // client did not get it.
                finish(exchange, outcome: .clientAborted)
            } else {
                carryOut(exchange.machine.clientClosed(), for: exchange)
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // I/O errors (reset, broken pipe): nothing can be sent any more.
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ShutdownGraceOver {
            closedByShutdown = true
        } else if event is ChannelShouldQuiesceEvent {  // graceful shutdown: finish the current exchange, then close
            quiesced = true
            if connection.stopTakingRequests(now: context.eventLoop.now) { context.close(promise: nil) }
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            if let exchange, exchange.machine.isTunnelling {
                // Half-closure is allowed only once a tunnel is open: the upstream is told the same way.
                carryOut(exchange.machine.clientFinishedSending(), for: exchange)
            } else if connection.stopTakingRequests(now: context.eventLoop.now) {
                context.close(promise: nil)
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: Request side

    /// Parses and forwards what the client sent, as far as the current exchange allows.
    /// Bytes arriving while this runs (re-entrantly) are appended and handled in the same call.
    private func processInbound() {
        guard !isProcessingInbound else { return }
        isProcessingInbound = true
        defer { isProcessingInbound = false }
        while var buffer = inbound, buffer.readableBytes > 0 {
            inbound = nil
            do {
                try consume(&buffer)
            } catch {
                inbound = nil
                requestBody = nil
                reject(error)
                return
            }
            let arrived = inbound
            if var arrived, buffer.readableBytes > 0 {
                buffer.writeBuffer(&arrived)
                inbound = buffer
            } else if arrived == nil {
                inbound = buffer.readableBytes > 0 ? buffer : nil
                noteHeadStarted()
                return
            }
        }
        noteHeadStarted()
    }

    /// Starts the header timeout when part of a request head waits with no exchange in flight.
    private func noteHeadStarted() {
        guard requestBody == nil, let inbound, inbound.readableBytes > 0,
            let deadline = connection.headBytesWaiting(now: context.eventLoop.now, timeouts: connectionTimeouts)
        else { return }
        armTimer(by: deadline)
    }

    private func consume(_ buffer: inout ByteBuffer) throws {
        if let exchange, exchange.machine.isTunnelling {
            tunnelFromClient(buffer, of: exchange)
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            return
        }
        while buffer.readableBytes > 0 {
            if connection.isClosing && exchange == nil {
                buffer.clear()
                return
            }
            if requestBody != nil {
                guard let exchange else {
                    requestBody = nil
                    continue
                }
                switch try requestBody!.next(&buffer) {
                case .data(let slice):
                    requestBodyArrived(slice, of: exchange)
                    if requestBody?.isDone == true {  // a declared length is complete without further bytes
                        requestBody = nil
                        requestEnded(exchange, trailers: nil)
                    }
                case .end(let trailers):
                    requestBody = nil
                    requestEnded(exchange, trailers: trailers)
                case .needMore:
                    return
                }
            } else if exchange == nil {
                guard let length = try headParser.headLength(in: &buffer) else { return }
                startExchange(try headParser.parseRequest(buffer.readSlice(length: length)!))
            } else {
                return  // a pipelined request: it waits until the current exchange ends
            }
        }
    }

    /// Answers a request the parser refused, then closes.
    private func reject(_ error: Error) {
        let proxyError: ProxyError
        switch error {
        case HeadError.tooLarge: proxyError = .headersTooLarge
        case HeadError.malformed(let why): proxyError = .malformedRequest(why)
        case HeadError.versionNotSupported: proxyError = .versionNotSupported
        case let failure as BodyReader.Failure: proxyError = .malformedRequest("invalid chunked body (\(failure))")
        default: proxyError = .malformedRequest("\(error)")
        }
        mustClose()
        if let exchange {
            carryOut(exchange.machine.fail(proxyError), for: exchange)
        } else {
            respondWithoutExchange(proxyError)
        }
    }

    private func requestBodyArrived(_ slice: ByteBuffer, of exchange: Exchange) {
        let action = exchange.machine.requestBodyReceived(bytes: slice.readableBytes, now: context.eventLoop.now)
        guard case .forwardBody = action else {
            carryOut(action, for: exchange)
            return
        }
        exchange.tap?.requestBody(slice)
        if exchange.upstreamRequest.framing == .chunked {
            forward(ChunkedCoding.chunkHeader(for: slice.readableBytes, allocator: allocator), of: exchange)
            forward(slice, of: exchange)
            forward(Self.crlf, of: exchange)
        } else {
            forward(slice, of: exchange)
        }
    }

    private func requestEnded(_ exchange: Exchange, trailers: ByteBuffer?) {
        guard !exchange.machine.isFinished else { return }  // answered already: the rest is dropped
        let now = context.eventLoop.now
        if exchange.upstreamRequest.framing == .chunked {
            var end = allocator.buffer(capacity: 5 + (trailers?.readableBytes ?? 0))
            ChunkedCoding.writeEnd(trailers: trailers, into: &end)
            forward(end, of: exchange)
        }
        carryOut(exchange.machine.requestEnded(now: now), for: exchange)
        armTimer(by: now + configuration.firstByteTimeout)
    }

    private func startExchange(_ head: RequestHead) {
        if let rejection = Self.validate(head, maxBodyBytes: configuration.maxBodyBytes) {
            mustClose()
            respondWithoutExchange(rejection, requestHead: head)
            return
        }
        let givenID = head.facts.requestIDField.map { head.headers.value(at: $0) }
        let requestID = givenID ?? loop.generateRequestID()
        guard RequestHeadRewriter.isForwardable(head) else {
            mustClose()
            respondWithoutExchange(.malformedRequest("invalid request target"), requestHead: head)
            return
        }
        let asksWebSocket = head.facts.connectionUpgrade && head.facts.upgradeOnlyWebSocket
        if asksWebSocket && !shared.tunnels.admit() {
            mustClose()  // as for every refusal: the connection's timers then follow the close, not its past
            respondWithoutExchange(.tooManyTunnels, requestHead: head)
            return
        }
        let route =
            shared.routes.isEmpty
            ? .defaultUpstream
            : shared.routes.route(for: Substring(head.uri), host: head.headers.first(name: "host").map { Substring($0) })
        let tap = loop.observer?.exchangeStarted(head, requestID: requestID)
        let upstreamRequest = shared.requestRewriter(for: route).rewrite(
            head, clientIP: clientIP, requestID: requestID, extraFields: tap?.upstreamHeaders ?? [],
            allocator: allocator)!  // forwardable: checked above
        let hasBody: Bool
        var buffersBody = false
        switch upstreamRequest.framing {
        case .none, .untilClose:
            hasBody = false
        case .contentLength:
            hasBody = true
            requestBody = BodyReader(framing: .contentLength, contentLength: upstreamRequest.contentLength)
            buffersBody = upstreamRequest.contentLength <= configuration.requestBufferingBytes
        case .chunked:
            hasBody = true
            requestBody = BodyReader(framing: .chunked)  // a chunked upload is streamed, as the client chose
        }
        let now = context.eventLoop.now
        let machine = ExchangeStateMachine<UpstreamConnection>(
            hasBody: hasBody, buffersBody: buffersBody,
            resendable: Exchange.isResendable(head.method, framing: upstreamRequest.framing),
            maxBodyBytes: configuration.maxBodyBytes, now: now, asksWebSocket: asksWebSocket)
        let exchange = Exchange(
            clientHead: head, upstreamRequest: upstreamRequest, machine: machine, now: now,
            keepClientAlive: head.isKeepAlive && !connection.isClosing, tap: tap, route: route
        )
        self.exchange = exchange
        connection.requestHeadParsed()
        if hasBody && head.facts.expectsContinue && head.version.minor >= 1 {
            // As nginx does: the proxy reads the body itself, so it invites it at once (RFC 9110 §10.1.1).
            exchange.sentContinue = true
            context.writeAndFlush(wrapOutboundOut(Self.continueResponse), promise: nil)
        }
        armTimer(by: now + (hasBody ? configuration.clientBodyTimeout : configuration.idleTimeout))
        if !hasBody { armTimer(by: now + configuration.firstByteTimeout) }
        carryOut(exchange.machine.startAction, for: exchange)
    }

    private static let continueResponse = ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\n")

    /// Hands the request to a pooled upstream connection, or opens one.
    private func acquireConnection(for exchange: Exchange) {
        if let connection = loop.pool(for: exchange.route).takeIdle() {
            carryOut(exchange.machine.upstreamConnected(connection), for: exchange)
        } else {
            connect(exchange)
        }
    }

    /// Refusals decided from the head alone (RFC 9112 §6.1 smuggling shapes, upgrades, declared size).
    static func validate(_ head: RequestHead, maxBodyBytes: Int?) -> ProxyError? {
        let facts = head.facts
        if head.method == .CONNECT { return .connectNotSupported }
        if facts.hostCount > 1 { return .malformedRequest("more than one Host header") }
        if facts.hostCount == 0 && head.version.minor >= 1 {
            return .malformedRequest("HTTP/1.1 request without a Host header")
        }
        if facts.hasTransferEncoding && facts.contentLengthCount > 0 {
            return .malformedRequest("both Content-Length and Transfer-Encoding")
        }
        if facts.hasTransferEncoding && head.version.minor == 0 {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            return .malformedRequest("Transfer-Encoding in an HTTP/1.0 request")
        }
        if facts.contentLengthConflict { return .malformedRequest("conflicting Content-Length values") }
        if facts.contentLengthValues > 1 {
            // RFC 9110 §8.6 allows accepting repeated equal values; nginx and llhttp refuse them, and so do we.
            return .malformedRequest("more than one Content-Length value")
        }
        if facts.contentLengthInvalid { return .malformedRequest("invalid Content-Length") }
        if facts.hasTransferEncoding && !facts.transferEncodingOnlyChunked {
            return .malformedRequest("unsupported Transfer-Encoding (only chunked is accepted)")
        }
        // An `h2c` upgrade is ignored (RFC 9113 §3.1): the request is served over HTTP/1.1. A WebSocket
        // handshake (RFC 6455 §4.1) is a bodiless HTTP/1.1 GET; other protocols are not supported.
        if facts.hasUpgrade && facts.connectionUpgrade && !facts.upgradeOnlyH2C {
            guard facts.upgradeOnlyWebSocket else { return .upgradeNotSupported }
            guard head.method == .GET, head.version.minor >= 1 else {
                return .malformedRequest("a WebSocket handshake is an HTTP/1.1 GET")
            }
            if facts.hasTransferEncoding || (facts.contentLength ?? 0) > 0 {
                return .malformedRequest("a WebSocket handshake has no body")
            }
        }
        if facts.expectsOther { return .expectationFailed }
        if let limit = maxBodyBytes, let declared = facts.contentLength, declared > limit {
            return .bodyTooLarge(limit: limit)
        }
        return nil
    }

    /// Opens a new upstream connection; the exchange's machine decides what its arrival (or failure)
    /// means, since the exchange may have ended meanwhile.
    private func connect(_ exchange: Exchange) {
        if exchange.connectStartedAt == nil { exchange.connectStartedAt = context.eventLoop.now }
        loop.pool(for: exchange.route).connect().assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let connection):
                let action = exchange.machine.upstreamConnected(connection)
                self.carryOut(action, for: exchange)
                if case .sendRequest = action {
                    self.armTimer(by: exchange.machine.lastActivity + self.configuration.idleTimeout)
                }
            case .failure(let error):
                let failure: ProxyError
                if case ChannelError.connectTimeout = error {
                    failure = .connectTimeout
                } else {
                    failure = .upstreamUnreachable(Self.describe(error))
                }
                self.carryOut(exchange.machine.connectFailed(failure), for: exchange)
            }
        }
    }

    /// Sends the request head, and what of the body arrived, on `connection`.
    private func attach(_ connection: UpstreamConnection, to exchange: Exchange) {
        connection.handler.owner = self
        connection.handler.expectResponse(
            requestIsHEAD: exchange.clientHead.method == .HEAD, upgrading: exchange.machine.asksWebSocket)
        exchange.sentUpstreamAt = context.eventLoop.now
        connection.write(exchange.upstreamRequest.head)
        for bytes in exchange.pendingBytes { connection.write(bytes) }
        exchange.pendingBytes.removeAll()
        connection.flush()
        if case .complete(let endedAt) = exchange.machine.request {
            armTimer(by: endedAt + configuration.firstByteTimeout)
        }
        resumeClientReadsIfPossible()
    }

    private func forward(_ bytes: ByteBuffer, of exchange: Exchange) {
        if let upstream = exchange.machine.upstream {
            upstream.write(bytes)
            upstreamNeedsFlush = true
        } else {
            exchange.pendingBytes.append(bytes)
        }
    }

    // MARK: Upstream side (UpstreamOwner)

    var mayReadUpstream: Bool { context.channel.isWritable }

    func upstreamInformational(_ head: ResponseHead) {
        guard let exchange else { return }
        // No 1xx for an HTTP/1.0 client (RFC 9110 §15.2), and no second invitation to send the body.
        if exchange.clientHead.version.minor == 0 || (exchange.sentContinue && head.status.code == 100) { return }
        let bytes = shared.responseRewriter.informational(
            head, clientVersion: exchange.clientHead.version, allocator: allocator)
        context.write(wrapOutboundOut(bytes), promise: nil)
        clientNeedsFlush = true
    }

    func upstreamHead(_ head: ResponseHead, framing: BodyFraming) {
        guard let exchange else { return }
        let now = context.eventLoop.now
        exchange.firstByteAt = now
        let tap = exchange.tap
        tap?.responseHead(head)
        let response = shared.responseRewriter.rewrite(
            head, framing: framing, requestIsHEAD: exchange.clientHead.method == .HEAD,
            clientVersion: exchange.clientHead.version,
            keepClientAlive: exchange.keepClientAlive && !connection.isClosing && exchange.machine.requestComplete,
            requestID: exchange.upstreamRequest.requestID, extraHeaders: tap?.responseHeaders ?? [],
            timing: configuration.serverTiming ? exchange.timing(responseHeadAt: now) : nil,
            allocator: allocator
        )
        _ = exchange.machine.responseHeadReceived(
            .init(
                // An upgrade the upstream declined: its connection is not reused, whatever it said.
                framing: framing, chunkedToClient: response.chunked,
                upstreamKeepsAlive: head.isKeepAlive && !exchange.machine.asksWebSocket,
                closeClientAfter: response.closeAfter),
            now: now)
        exchange.status = Int(head.status.code)
        exchange.streamed = framing == .chunked || framing == .untilClose
        if let observer = loop.observer { observer.responseStarted(streamed: exchange.streamed) }
        context.write(wrapOutboundOut(response.head), promise: nil)
        clientNeedsFlush = true
    }

    func upstreamBody(_ bytes: ByteBuffer) {
        guard let exchange, let response = exchange.machine.response else { return }
        exchange.responseBodyBytes += bytes.readableBytes
        exchange.tap?.responseBody(bytes)
        if response.chunkedToClient && bytes.readableBytes <= Self.maxCopiedChunk {
            // One write instead of three: a copy of a small chunk costs less than two more trips
            // through the pipeline and the channel's write queue (an SSE event is a few hundred bytes).
            var chunk = allocator.buffer(capacity: bytes.readableBytes + 20)
            ChunkedCoding.writeChunk(bytes, into: &chunk)
            context.write(wrapOutboundOut(chunk), promise: nil)
        } else if response.chunkedToClient {
            context.write(wrapOutboundOut(ChunkedCoding.chunkHeader(for: bytes.readableBytes, allocator: allocator)), promise: nil)
            context.write(wrapOutboundOut(bytes), promise: nil)
            context.write(wrapOutboundOut(Self.crlf), promise: nil)
        } else {
            context.write(wrapOutboundOut(bytes), promise: nil)
        }
        clientNeedsFlush = true
    }

    func upstreamSwitchedProtocols(_ head: ResponseHead) {
        guard let exchange else { return }
        exchange.firstByteAt = context.eventLoop.now
        exchange.status = Int(head.status.code)
        exchange.tap?.tunnelOpened(
            head, request: exchange.clientHead, requestID: exchange.upstreamRequest.requestID, route: exchange.route)
        exchange.switchingProtocolsHead = head.bytes
        carryOut(exchange.machine.switchedProtocols(now: context.eventLoop.now), for: exchange)
    }

    func upstreamTunnelBytes(_ bytes: ByteBuffer) {
        guard let exchange, exchange.tunnel != nil else { return }
        exchange.tunnel!.bytesFromUpstream += bytes.readableBytes
        exchange.upstreamFrames.count(bytes)
        exchange.tapLater(bytes, fromClient: false)
        context.write(wrapOutboundOut(bytes), promise: nil)
        clientNeedsFlush = true
    }

    func upstreamFinishedSending(_ connection: UpstreamConnection) {
        guard let exchange else { return }
        carryOut(exchange.machine.upstreamFinishedSending(connection), for: exchange)
    }

    func upstreamEnd(trailers: ByteBuffer?, nothingFollowed: Bool) {
        guard let exchange else { return }
        carryOut(exchange.machine.responseEnded(nothingFollowed: nothingFollowed), for: exchange, trailers: trailers)
    }

    func upstreamReadComplete() {
        if clientNeedsFlush {
            clientNeedsFlush = false
            exchange?.machine.noteActivity(now: context.eventLoop.now)
            context.flush()
        }
        exchange?.tapTunnelBytes()
    }

    func upstreamWritabilityChanged() {
        if let exchange, let upstream = exchange.machine.upstream { noteUpstreamWritability(upstream, of: exchange) }
        resumeClientReadsIfPossible()
    }

    /// A tunnel's upstream that takes nothing for `send_timeout` closes the tunnel: the stall's deadline.
    private func noteUpstreamWritability(_ upstream: UpstreamConnection, of exchange: Exchange) {
        let channel = upstream.channel
        let writable = channel.isWritable
        if let deadline = exchange.machine.upstreamWritabilityChanged(
            writable: writable, now: context.eventLoop.now, bufferedBytes: writable ? 0 : Self.bufferedBytes(channel),
            timeouts: timeouts)
        {
            armTimer(by: deadline)
        }
    }

    func upstreamClosed(_ connection: UpstreamConnection, error: Error?) {
        guard let exchange else { return }
        let action = exchange.machine.upstreamClosed(
            connection, hadServed: connection.hasServed, error: error.map(Self.describe))
        carryOut(action, for: exchange)
    }

    // MARK: Carrying out the exchange's decisions

    /// Does what the exchange's machine decided. `trailers`: the response's, when it ended.
    private func carryOut(
        _ action: ExchangeStateMachine<UpstreamConnection>.Action, for exchange: Exchange, trailers: ByteBuffer? = nil
    ) {
        switch action {
        case .none, .forwardBody:
            break
        case .acquireConnection:
            acquireConnection(for: exchange)
        case .openFreshConnection:
            connect(exchange)
        case .sendRequest(let connection):
            attach(connection, to: exchange)
        case .flushUpstream:
            upstreamNeedsFlush = false
            exchange.machine.upstream?.flush()
        case .releaseLateConnection(let connection):
            loop.pool(for: exchange.route).release(connection)
        case .openTunnel(let upstream):
            openTunnel(exchange, to: upstream)
        case .closeUpstreamOutput:
            exchange.machine.upstream?.channel.close(mode: .output, promise: nil)
        case .closeClientOutput:
            context.close(mode: .output, promise: nil)
        case .end(let ending):
            end(exchange, ending, trailers: trailers)
        }
    }

    private func end(_ exchange: Exchange, _ ending: ExchangeStateMachine<UpstreamConnection>.Ending, trailers: ByteBuffer?) {
        exchange.pendingBytes.removeAll()
        switch ending {
        case .completed(let upstream, let requestComplete, let response):
            release(upstream, of: exchange)
            completeResponse(
                of: exchange, trailers: trailers, chunked: response.chunkedToClient,
                close: response.closeClientAfter || connection.isClosing || !requestComplete)
        case .answer(let error, let upstream, let requestComplete):
            release(upstream, of: exchange)
            answer(exchange, with: error, requestComplete: requestComplete)
        case .abort(let outcome, let upstream):
            // Cuts a response that cannot be completed: the client sees the connection close.
            release(upstream, of: exchange)
            mustClose()
            finish(exchange, outcome: outcome)  // before closing, which reports a client abort otherwise
            context.flush()
            context.close(promise: nil)
        case .clientGone(let upstream):
            if exchange.tunnel != nil {
                closeAfterWrites(upstream)
                // A tunnel ends when either side closes: that is how a WebSocket connection ends.
                exchange.tunnel!.closedAtShutdown = closedByShutdown
                finish(exchange, outcome: .completed)
            } else {
                release(upstream, of: exchange)
                finish(exchange, outcome: .clientAborted)
            }
        case .tunnelClosed(let upstream, let idle):
            closeAfterWrites(upstream)
            exchange.tunnel?.closedIdle = idle
            mustClose()
            finish(exchange, outcome: .completed)
            closeOnceWritten(nil)
        }
    }

    // MARK: Tunnel

    /// Closes a tunnel's upstream connection once what was forwarded to it is written (the client's
    /// last bytes, read at its end-of-file, still reach the upstream), or `send_timeout` later at the
    /// latest, for an upstream that reads nothing.
    private func closeAfterWrites(_ release: ExchangeStateMachine<UpstreamConnection>.Release) {
        guard case .close(let upstream) = release else { return }
        upstream.handler.owner = nil
        let channel = upstream.channel
        let deadline = channel.eventLoop.scheduleTask(in: configuration.sendTimeout) { channel.close(promise: nil) }
        channel.writeAndFlush(channel.allocator.buffer(capacity: 0)).whenComplete { _ in
            deadline.cancel()
            channel.close(promise: nil)
        }
    }

    /// Writes the upstream's `101` to the client unchanged; from now on bytes pass both ways as they
    /// come, and either side may half-close.
    private func openTunnel(_ exchange: Exchange, to upstream: UpstreamConnection) {
        exchange.tunnel = TunnelFigures()
        loop.observer?.tunnelOpened()
        if let head = exchange.switchingProtocolsHead {
            context.write(wrapOutboundOut(head), promise: nil)
            exchange.switchingProtocolsHead = nil
        }
        context.flush()
        guard self.exchange === exchange, context.channel.isActive else { return }  // the flush failed and closed it
        _ = context.channel.syncOptions.map { try? $0.setOption(ChannelOptions.allowRemoteHalfClosure, value: true) }
        _ = upstream.channel.syncOptions.map { try? $0.setOption(ChannelOptions.allowRemoteHalfClosure, value: true) }
        requestBody = nil
        armTimer(by: context.eventLoop.now + configuration.webSocketIdleTimeout)
        noteUpstreamWritability(upstream, of: exchange)
        // Bytes the client sent right behind its handshake go through now.
        if let early = inbound, early.readableBytes > 0 {
            inbound = nil
            tunnelFromClient(early, of: exchange)
            upstream.flush()
        }
        resumeClientReadsIfPossible()
    }

    private func tunnelFromClient(_ bytes: ByteBuffer, of exchange: Exchange) {
        guard let upstream = exchange.machine.upstream else { return }
        exchange.tunnel?.bytesFromClient += bytes.readableBytes
        exchange.clientFrames.count(bytes)
        exchange.machine.noteActivity(now: context.eventLoop.now)
        exchange.tapLater(bytes, fromClient: true)
        upstream.write(bytes)
        upstreamNeedsFlush = true
    }

    private func release(_ release: ExchangeStateMachine<UpstreamConnection>.Release, of exchange: Exchange) {
        switch release {
        case .keep(let upstream):
            loop.pool(for: exchange.route).release(upstream)
        case .close(let upstream):
            upstream.handler.owner = nil
            upstream.channel.close(promise: nil)
        case .none:
            break
        }
    }

    private func completeResponse(of exchange: Exchange, trailers: ByteBuffer?, chunked: Bool, close: Bool) {
        clientNeedsFlush = false
        var end: ByteBuffer?
        if chunked {
            var bytes = allocator.buffer(capacity: 5 + (trailers?.readableBytes ?? 0))
            ChunkedCoding.writeEnd(trailers: trailers, into: &bytes)
            end = bytes
        }
        if close {
            mustClose()
            // Finished before the close: a write that completes at once closes the channel at once,
            // and an exchange still open then would be reported as a client abort.
            finish(exchange, outcome: .completed)
            closeOnceWritten(end)
            return
        } else if let end {
            context.writeAndFlush(wrapOutboundOut(end), promise: nil)
        } else {
            context.flush()
        }
        finish(exchange, outcome: .completed)
    }

    /// Writes `last` (or nothing) and closes the client connection once everything before it is
    /// written: the write completes only then.
    private func closeOnceWritten(_ last: ByteBuffer?) {
        let written = context.writeAndFlush(wrapOutboundOut(last ?? allocator.buffer(capacity: 0)))
        written.assumeIsolated().whenComplete { [context] _ in context!.close(promise: nil) }
    }

    /// The proxy's own answer to an exchange no response started for; a request not read to its end,
    /// or a client that asked to close (`Connection: close`, HTTP/1.0), closes the connection after it.
    private func answer(_ exchange: Exchange, with error: ProxyError, requestComplete: Bool) {
        exchange.status = Int(error.status.code)
        if !requestComplete || !exchange.keepClientAlive { mustClose() }
        let closing = connection.isClosing
        let extraHeaders = exchange.tap?.responseHeaders ?? []
        if closing {
            // Finished before the answer is written: its write can complete (and close the channel) at
            // once, and an exchange still open then would be reported as a client abort.
            finish(exchange, outcome: error.outcome)
        }
        writeError(
            error, requestID: exchange.upstreamRequest.requestID, version: exchange.clientHead.version,
            extraHeaders: extraHeaders)
        if !closing { finish(exchange, outcome: error.outcome) }
    }

    private func respondWithoutExchange(_ error: ProxyError, requestHead: RequestHead? = nil) {
        let requestID =
            requestHead.flatMap { head in head.facts.requestIDField.map { head.headers.value(at: $0) } }
            ?? loop.generateRequestID()  // a refused request's id is generated here
        writeError(error, requestID: requestID, version: requestHead?.version ?? .http1_1)
        if let requestHead, let observer = loop.observer {
            let summary = ExchangeSummary(
                requestID: requestID, method: requestHead.method, target: requestHead.uri,
                clientAddress: clientIP, status: Int(error.status.code), requestBodyBytes: 0,
                responseBodyBytes: 0, startedAtEpochNanos: Exchange.wallClockNanos(), duration: .zero,
                timeToFirstByte: nil, outcome: error.outcome, forwarded: false
            )
            observer.exchangeFinished(summary, tap: nil)
        }
    }

    /// The proxy's own answer: a short JSON body naming the error and the request id.
    private func writeError(
        _ error: ProxyError, requestID: String, version: HTTPVersion, extraHeaders: [(name: String, value: String)] = []
    ) {
        let bytes = error.response(
            requestID: requestID, requestIDHeader: configuration.requestIDHeader, version: version, closes: connection.isClosing,
            extraHeaders: extraHeaders, allocator: allocator)
        if connection.isClosing {
            closeOnceWritten(bytes)
        } else {
            context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
        }
    }

    /// Reports the exchange and lets the connection go on: the next request, or nothing if it closes.
    /// An exchange whose last write failed at once was already reported as client-aborted by the
    /// close that failure caused; it is not reported twice.
    private func finish(_ exchange: Exchange, outcome: ExchangeOutcome) {
        guard self.exchange === exchange else { return }
        self.exchange = nil
        exchange.tapTunnelBytes()  // the tap sees every byte before the exchange ends
        if exchange.machine.asksWebSocket { shared.tunnels.release() }  // its slot, taken at its head
        loop.observer?.exchangeFinished(exchange.summary(clientAddress: clientIP, outcome: outcome, now: context.eventLoop.now), tap: exchange.tap)
        let now = context.eventLoop.now
        guard connection.exchangeEnded(now: now) else {
            // Nothing more is read from this connection; it closes after what was written.
            requestBody = nil
            inbound = nil
            armClosingTimer()
            return
        }
        armTimer(by: now + configuration.clientKeepaliveTimeout)
        processInbound()
        resumeClientReadsIfPossible()
    }

    // MARK: Backpressure

    private var shouldHoldClientReads: Bool {
        guard let exchange else { return false }
        if exchange.machine.isTunnelling, let upstream = exchange.machine.upstream { return !upstream.channel.isWritable }
        if exchange.machine.requestComplete {
            // A pipelined request waits in `inbound`; read no further until it can be handled.
            return (inbound?.readableBytes ?? 0) > 0
        }
        guard let upstream = exchange.machine.upstream else { return exchange.machine.isConnecting }
        return !upstream.channel.isWritable
    }

    private func resumeClientReadsIfPossible() {
        guard readPending, !shouldHoldClientReads else { return }
        readPending = false
        // The body timeout measures the client's pauses, not the time reads were held for the upstream.
        exchange?.machine.clientReadsResumed(now: context.eventLoop.now)
        context.read()
    }

    // MARK: Timeouts

    /// One timer per connection: it fires at the earliest deadline seen and re-arms itself lazily,
    /// so a fast exchange costs no timer operations at all.
    private func armTimer(by deadline: NIODeadline) {
        guard deadline < timerDeadline else { return }
        timer?.cancel()
        timerDeadline = deadline
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            self.timer = nil
            self.timerDeadline = .distantFuture
            self.timerFired()
        }
    }

    /// The connection must close once what was written is out.
    private func mustClose() {
        connection.mustClose(now: context.eventLoop.now)
        armClosingTimer()
    }

    /// A connection closing with nothing in flight is closed a keep-alive timeout later at the latest,
    /// in case what was written never goes out (a client that reads nothing).
    private func armClosingTimer() {
        if case .closing(let since) = connection.state { armTimer(by: since + configuration.clientKeepaliveTimeout) }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
        timerDeadline = .distantFuture
    }

    private func timerFired() {
        guard context.channel.isActive else { return }
        let now = context.eventLoop.now
        let (decision, sendDeadline) = connection.timerFired(
            now: now, bufferedBytes: Self.bufferedBytes(context.channel), timeouts: connectionTimeouts)
        if let sendDeadline { armTimer(by: sendDeadline) }
        switch decision {
        case .wait(let deadline):
            armTimer(by: deadline)
        case .nothing:
            break
        case .sendTimedOut:
            sendTimedOut()
        case .headerTimedOut:
            loop.observer?.connectionEvent(.clientHeaderTimeout)
            mustClose()
            inbound = nil
            respondWithoutExchange(.clientHeaderTimeout)
        case .closeIdle(let firstRequest):
            if firstRequest { loop.observer?.connectionEvent(.clientHeaderTimeout) }
            context.close(promise: nil)
        case .exchange:
            if let exchange { exchangeTimerFired(exchange, now: now) }
        }
    }

    private func exchangeTimerFired(_ exchange: Exchange, now: NIODeadline) {
        if exchange.machine.upstreamStall != nil, let upstream = exchange.machine.upstream {
            exchange.machine.upstreamStillStalled(bufferedBytes: Self.bufferedBytes(upstream.channel), now: now)
        }
        switch exchange.machine.timerFired(now: now, clientReadsHeld: shouldHoldClientReads, timeouts: timeouts) {
        case .wait(let deadline):
            armTimer(by: deadline)
        case .clientBodyTimeout:
            loop.observer?.connectionEvent(.clientBodyTimeout)
            carryOut(exchange.machine.fail(.clientTimeout), for: exchange)
        case .fail(let error):
            carryOut(exchange.machine.fail(error), for: exchange)
        case .abortIdle:
            carryOut(exchange.machine.abort(ProxyError.idleTimeout.outcome), for: exchange)
        case .closeIdleTunnel:
            carryOut(exchange.machine.closeTunnel(idle: true), for: exchange)
        case .closeStalledTunnel:
            exchange.tunnel?.closedStalled = true
            let stalled = exchange.machine.upstream
            carryOut(exchange.machine.closeTunnel(idle: false), for: exchange)
            stalled?.channel.close(promise: nil)  // it takes nothing: its writes are not waited for
        }
    }

    private var connectionTimeouts: ClientConnectionStateMachine.Timeouts {
        .init(header: configuration.clientHeaderTimeout, keepalive: configuration.clientKeepaliveTimeout, send: configuration.sendTimeout)
    }

    private var timeouts: ExchangeStateMachine<UpstreamConnection>.Timeouts {
        .init(
            connect: configuration.connectTimeout, firstByte: configuration.firstByteTimeout, idle: configuration.idleTimeout,
            clientBody: configuration.clientBodyTimeout, tunnelIdle: configuration.webSocketIdleTimeout,
            send: configuration.sendTimeout)
    }

    /// The client took nothing of what was written to it for `sendTimeout`: give up on it.
    private func sendTimedOut() {
        loop.observer?.connectionEvent(.sendTimeout)
        mustClose()
        if let exchange {
            carryOut(exchange.machine.abort(.clientAborted), for: exchange)
        } else {
            context.close(promise: nil)
        }
    }

    /// Bytes written to the channel that the socket has not taken yet.
    private static func bufferedBytes(_ channel: Channel) -> Int {
        (try? channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
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
        if let protocolError = error as? UpstreamProtocolError { return protocolError.description }
        if case ChannelError.connectTimeout = error { return "connect timeout" }
        return "\(error)"
    }
}
