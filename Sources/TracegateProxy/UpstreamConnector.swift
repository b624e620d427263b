import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

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
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.setOptions(of: channel)
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

    /// Options set in place: `channelOption` would chain a future per option on every connect.
    /// (TCP_NODELAY is `ClientBootstrap`'s default.)
    private static func setOptions(of channel: Channel) throws {
        guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
        // One read of at most `maxReadBytes` per cycle: the client's writability is checked before
        // every read, so a slow reader holds at most this plus its write buffer (see `ProxyListener`).
        try options.setOption(ChannelOptions.maxMessagesPerRead, value: 1)
        try options.setOption(
            ChannelOptions.recvAllocator,
            value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: maxReadBytes))
    }
}
