import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Receives one upstream connection's events while it serves an exchange.
protocol UpstreamOwner: AnyObject {
    /// An interim (1xx) response; the final one follows.
    func upstreamInformational(_ head: ResponseHead)
    func upstreamHead(_ head: ResponseHead, framing: BodyFraming)
    func upstreamBody(_ bytes: ByteBuffer)
    /// The response is complete; `trailers` holds a chunked body's trailer field lines, if any.
    /// `nothingFollowed` is false when more bytes arrived right behind the response: bytes nobody asked
    /// for, so the connection must not serve another exchange.
    func upstreamEnd(trailers: ByteBuffer?, nothingFollowed: Bool)
    func upstreamReadComplete()
    func upstreamClosed(_ connection: UpstreamConnection, error: Error?)
    func upstreamWritabilityChanged()
    /// False while the client cannot take more bytes: upstream reads are then held (backpressure).
    var mayReadUpstream: Bool { get }
}

/// The upstream sent something that is not a valid HTTP/1 response.
struct UpstreamProtocolError: Error, CustomStringConvertible {
    let reason: String
    var description: String { "invalid response from upstream: \(reason)" }
}

/// One keep-alive connection to the upstream, with the handler at the end of its pipeline.
///
/// Used only on its channel's event loop (asserted where it writes): it is `@unchecked Sendable`
/// only so that the connect future, completed on that same loop, can carry it.
final class UpstreamConnection: @unchecked Sendable {
    let channel: Channel
    let handler: UpstreamHandler
    /// True once it has served an exchange; a failure on a reused connection may be retried.
    var hasServed = false

    init(channel: Channel, handler: UpstreamHandler) {
        self.channel = channel
        self.handler = handler
        handler.connection = self
    }

    func write(_ bytes: ByteBuffer) {
        channel.eventLoop.assertInEventLoop()
        handler.write(bytes)
    }

    func flush() {
        channel.eventLoop.assertInEventLoop()
        handler.flush()
    }
}

/// The last handler of an upstream connection: parses responses from the socket's bytes and relays
/// them to the exchange that owns the connection.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Largest response head accepted from the upstream.
    static let maxResponseHeadBytes = 64 * 1024

    var owner: UpstreamOwner?
    weak var connection: UpstreamConnection?
    private var context: ChannelHandlerContext?
    private var readPending = false
    private var lastError: Error?
    private var headParser: HeadParser
    private var inbound: ByteBuffer?
    private var body: BodyReader?
    private var awaitingHead = false
    private var requestIsHEAD = false
    /// Called once when the channel closes (removes it from the pool's idle list).
    var onClose: ((UpstreamHandler) -> Void)?

    init(requestIDHeader: String = "X-Request-ID") {
        headParser = HeadParser(requestIDHeader: requestIDHeader, maxHeadBytes: Self.maxResponseHeadBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// A request was sent: the next bytes are its response.
    func expectResponse(requestIsHEAD: Bool) {
        self.requestIsHEAD = requestIsHEAD
        awaitingHead = true
        body = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard owner != nil, awaitingHead || body != nil else {
            // An idle pooled connection must not receive anything: it is unusable now.
            context.close(promise: nil)
            return
        }
        if inbound == nil {
            inbound = bytes
        } else {
            inbound!.writeBuffer(&bytes)
        }
        guard var buffer = inbound else { return }
        inbound = nil
        do {
            try consume(&buffer)
        } catch {
            lastError = (error as? UpstreamProtocolError) ?? UpstreamProtocolError(reason: "\(error)")
            context.close(promise: nil)
            return
        }
        if buffer.readableBytes > 0 {
            if awaitingHead || body != nil {
                inbound = buffer
            } else {
                context.close(promise: nil)  // bytes after a complete response: the connection is unusable
            }
        }
    }

    private func consume(_ buffer: inout ByteBuffer) throws {
        while let owner {
            if body != nil {
                switch try body!.next(&buffer) {
                case .data(let slice):
                    owner.upstreamBody(slice)
                case .end(let trailers):
                    body = nil
                    owner.upstreamEnd(trailers: trailers, nothingFollowed: buffer.readableBytes == 0)
                    return
                case .needMore:
                    return
                }
            } else if awaitingHead {
                let length: Int?
                do {
                    length = try headParser.headLength(in: &buffer)
                } catch {
                    throw UpstreamProtocolError(reason: "response head larger than \(Self.maxResponseHeadBytes) bytes")
                }
                guard let length else { return }
                let head: ResponseHead
                do {
                    head = try headParser.parseResponse(buffer.readSlice(length: length)!)
                } catch HeadError.malformed(let why) {
                    throw UpstreamProtocolError(reason: why)
                }
                let code = head.status.code
                if code == 101 {
                    // The proxy never forwards an upgrade, so a switch of protocols is an answer to nothing.
                    throw UpstreamProtocolError(reason: "101 Switching Protocols without an upgrade request")
                }
                if code < 200 {
                    owner.upstreamInformational(head)
                    continue
                }
                guard let framing = ResponseFraming.of(head, requestIsHEAD: requestIsHEAD) else {
                    throw UpstreamProtocolError(reason: "invalid Content-Length")
                }
                awaitingHead = false
                body = BodyReader(framing: framing, contentLength: head.facts.contentLength ?? 0)
                owner.upstreamHead(head, framing: framing)
            } else {
                return
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose?(self)
        onClose = nil
        if let owner, let connection {
            self.owner = nil
            owner.upstreamClosed(connection, error: lastError)
        }
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        lastError = error
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.upstreamWritabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let owner, !owner.mayReadUpstream {
            readPending = true
        } else {
            context.read()
        }
    }

    /// Re-issues a read that was held for backpressure.
    func resumeReading() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    func write(_ bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    func flush() { context?.flush() }
}

/// Opens upstream connections; the seam where tests substitute in-memory channels.
protocol UpstreamConnecting: Sendable {
    func connect(on eventLoop: EventLoop) -> EventLoopFuture<UpstreamConnection>
}

/// Opens connections to the upstream (TCP, and TLS for https).
struct UpstreamConnector: UpstreamConnecting {
    /// Largest single read from an upstream socket.
    static let maxReadBytes = 8 * 1024

    let host: String
    let port: Int
    let connectTimeout: TimeAmount
    let requestIDHeader: String
    let tlsContext: NIOSSLContext?
    /// Server name for SNI and certificate checks: nil when the host is an IP literal.
    let serverHostname: String?
    /// The socket address of an IP-literal host. Connecting to it skips NIO's resolver, which
    /// would otherwise hand every new connection to a Dispatch thread for `getaddrinfo` and run
    /// Happy Eyeballs timers; a host name is resolved on every connect, so DNS changes are seen.
    let literalAddress: SocketAddress?

    init(upstream: ProxyConfiguration.Upstream, configuration: ProxyConfiguration) throws {
        self.host = upstream.host
        self.port = upstream.port
        self.connectTimeout = configuration.connectTimeout
        self.requestIDHeader = configuration.requestIDHeader
        if upstream.usesTLS {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = upstream.verifyCertificate ? .fullVerification : .none
            if let caFile = upstream.caFile { tls.trustRoots = .file(caFile) }
            self.tlsContext = try NIOSSLContext(configuration: tls)
        } else {
            self.tlsContext = nil
        }
        self.literalAddress = try? SocketAddress(ipAddress: upstream.host, port: upstream.port)
        self.serverHostname = literalAddress == nil ? upstream.host : nil
    }

    func connect(on eventLoop: EventLoop) -> EventLoopFuture<UpstreamConnection> {
        // The handler is used only on `eventLoop`, where the channel is initialised and connected.
        let handler = NIOLoopBoundBox.makeBoxSendingValue(UpstreamHandler(requestIDHeader: requestIDHeader), eventLoop: eventLoop)
        let tlsContext = self.tlsContext
        let serverHostname = self.serverHostname
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            // One read of at most `maxReadBytes` per cycle: the client's writability is checked before
            // every read, so a slow reader holds at most this plus its write buffer (see `ProxyListener`).
            .channelOption(ChannelOptions.maxMessagesPerRead, value: 1)
            .channelOption(
                ChannelOptions.recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: Self.maxReadBytes))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tlsContext {
                        try sync.addHandler(NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname))
                    }
                    try sync.addHandler(handler.value)
                }
            }
        let connected = literalAddress.map { bootstrap.connect(to: $0) } ?? bootstrap.connect(host: host, port: port)
        return connected.map { channel in UpstreamConnection(channel: channel, handler: handler.value) }
    }
}

/// Idle keep-alive upstream connections of one event loop, most recently used first.
/// Only ever touched on its own event loop (asserted in debug builds), so it needs no lock (hence
/// `@unchecked Sendable`).
final class UpstreamPool: @unchecked Sendable {
    let eventLoop: EventLoop
    private let connector: UpstreamConnecting
    private let maxIdle: Int
    private var idle: [UpstreamConnection] = []
    private var closed = false

    init(eventLoop: EventLoop, connector: UpstreamConnecting, maxIdle: Int) {
        self.eventLoop = eventLoop
        self.connector = connector
        self.maxIdle = maxIdle
    }

    /// An idle connection that is still open, if there is one.
    func takeIdle() -> UpstreamConnection? {
        eventLoop.assertInEventLoop()
        while let connection = idle.popLast() {
            if connection.channel.isActive { return connection }
        }
        return nil
    }

    func connect() -> EventLoopFuture<UpstreamConnection> {
        eventLoop.assertInEventLoop()
        return connector.connect(on: eventLoop)
    }

    /// Returns a connection that finished an exchange cleanly; it is kept if there is room.
    func release(_ connection: UpstreamConnection) {
        eventLoop.assertInEventLoop()
        connection.handler.owner = nil
        connection.hasServed = true
        guard !closed, connection.channel.isActive, idle.count < maxIdle else {
            connection.channel.close(promise: nil)
            return
        }
        if connection.handler.onClose == nil {
            // Set once per connection (not per release): removing a connection that is not idle does nothing.
            connection.handler.onClose = { [weak self] handler in
                self?.idle.removeAll { $0.handler === handler }
            }
        }
        idle.append(connection)
    }

    /// Closes every idle connection and stops keeping new ones.
    func closeAll() {
        eventLoop.assertInEventLoop()
        closed = true
        let connections = idle
        idle.removeAll()
        for connection in connections {
            connection.handler.onClose = nil
            connection.channel.close(promise: nil)
        }
    }
}
