import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Receives one upstream connection's events while it serves an exchange.
protocol UpstreamOwner: AnyObject {
    func upstreamRead(_ part: HTTPClientResponsePart)
    func upstreamReadComplete()
    func upstreamClosed(_ connection: UpstreamConnection, error: Error?)
    func upstreamWritabilityChanged()
    /// False while the client cannot take more bytes: upstream reads are then held (backpressure).
    var mayReadUpstream: Bool { get }
}

/// One keep-alive connection to the upstream, with the handler at the end of its pipeline.
final class UpstreamConnection {
    let channel: Channel
    let handler: UpstreamHandler
    /// True once it has served an exchange; a failure on a reused connection may be retried.
    var hasServed = false

    init(channel: Channel, handler: UpstreamHandler) {
        self.channel = channel
        self.handler = handler
        handler.connection = self
    }

    func write(_ part: HTTPClientRequestPart) { handler.write(part) }
    func flush() { handler.flush() }
}

/// The last handler of an upstream connection: relays events to the exchange that owns it.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    var owner: UpstreamOwner?
    weak var connection: UpstreamConnection?
    private var context: ChannelHandlerContext?
    private var readPending = false
    private var lastError: Error?
    /// Called once when the channel closes (removes it from the pool's idle list).
    var onClose: ((UpstreamHandler) -> Void)?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let owner else {
            // An idle pooled connection must not receive anything: it is unusable now.
            context.close(promise: nil)
            return
        }
        owner.upstreamRead(unwrapInboundIn(data))
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

    func write(_ part: HTTPClientRequestPart) {
        context?.write(wrapOutboundOut(part), promise: nil)
    }

    func flush() { context?.flush() }
}

/// Opens upstream connections; the seam where tests substitute in-memory channels.
protocol UpstreamConnecting: Sendable {
    func connect(on eventLoop: EventLoop) -> EventLoopFuture<UpstreamConnection>
}

/// Opens connections to the upstream (TCP, and TLS for https).
struct UpstreamConnector: UpstreamConnecting {
    let host: String
    let port: Int
    let connectTimeout: TimeAmount
    let tlsContext: NIOSSLContext?
    /// Server name for SNI and certificate checks: nil when the host is an IP literal.
    let serverHostname: String?

    init(configuration: ProxyConfiguration) throws {
        let upstream = configuration.upstream
        self.host = upstream.host
        self.port = upstream.port
        self.connectTimeout = configuration.connectTimeout
        if upstream.usesTLS {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = upstream.verifyCertificate ? .fullVerification : .none
            if let caFile = upstream.caFile { tls.trustRoots = .file(caFile) }
            self.tlsContext = try NIOSSLContext(configuration: tls)
        } else {
            self.tlsContext = nil
        }
        let isIPLiteral = (try? SocketAddress(ipAddress: upstream.host, port: 0)) != nil
        self.serverHostname = isIPLiteral ? nil : upstream.host
    }

    func connect(on eventLoop: EventLoop) -> EventLoopFuture<UpstreamConnection> {
        let handler = UpstreamHandler()
        let tlsContext = self.tlsContext
        let serverHostname = self.serverHostname
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tlsContext {
                        try sync.addHandler(NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname))
                    }
                    var encoder = HTTPRequestEncoder.Configuration()
                    encoder.automaticallySetFramingHeaders = false
                    try sync.addHandler(HTTPRequestEncoder(configuration: encoder))
                    try sync.addHandler(
                        ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes, informationalResponseStrategy: .forward))
                    )
                    try sync.addHandler(handler)
                }
            }
            .connect(host: host, port: port)
            .map { channel in UpstreamConnection(channel: channel, handler: handler) }
    }
}

/// Idle keep-alive upstream connections of one event loop, most recently used first.
/// Only ever touched on its own event loop, so it needs no lock (hence `@unchecked Sendable`).
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
        while let connection = idle.popLast() {
            connection.handler.onClose = nil
            if connection.channel.isActive { return connection }
        }
        return nil
    }

    func connect() -> EventLoopFuture<UpstreamConnection> {
        connector.connect(on: eventLoop)
    }

    /// Returns a connection that finished an exchange cleanly; it is kept if there is room.
    func release(_ connection: UpstreamConnection) {
        connection.handler.owner = nil
        connection.hasServed = true
        guard !closed, connection.channel.isActive, idle.count < maxIdle else {
            connection.channel.close(promise: nil)
            return
        }
        connection.handler.onClose = { [unowned self] handler in
            self.idle.removeAll { $0.handler === handler }
        }
        idle.append(connection)
    }

    /// Closes every idle connection and stops keeping new ones.
    func closeAll() {
        closed = true
        let connections = idle
        idle.removeAll()
        for connection in connections {
            connection.handler.onClose = nil
            connection.channel.close(promise: nil)
        }
    }
}
