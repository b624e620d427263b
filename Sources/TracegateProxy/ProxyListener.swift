import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// The public listener: accepts client connections and runs the data plane on them.
///
/// Lifecycle: `start(host:port:)` binds; `shutdown(grace:)` stops accepting, lets in-flight exchanges
/// finish (idle keep-alive connections close at once), and after the grace period closes what is left.
public final class ProxyListener: Sendable {
    private let shared: ProxyShared
    private let group: EventLoopGroup
    /// Per event loop: its pools and request ids.
    private let loops: [ObjectIdentifier: LoopShared]
    private let tls: ServerTLS?
    private let state = NIOLockedValueBox(State())

    private struct State {
        var serverChannels: [Channel] = []
        var connections: [ObjectIdentifier: Channel] = [:]
        var drained: EventLoopPromise<Void>?
    }

    /// - Parameter tls: serve HTTPS with this certificate (nil: plain HTTP).
    public init(configuration: ProxyConfiguration, group: EventLoopGroup, observer: ExchangeObserver?, tls: ServerTLS? = nil) throws {
        self.shared = ProxyShared(configuration: configuration, observer: observer, scheme: tls == nil ? "http" : "https")
        self.tls = tls
        self.group = group
        let connectors = try configuration.upstreams.map { try UpstreamConnector(upstream: $0, configuration: configuration) }
        var loops: [ObjectIdentifier: LoopShared] = [:]
        for eventLoop in group.makeIterator() {
            let pools = connectors.map {
                UpstreamPool(eventLoop: eventLoop, connector: $0, maxIdle: configuration.upstreamPoolSize)
            }
            loops[ObjectIdentifier(eventLoop)] = LoopShared(
                eventLoop: eventLoop, pools: pools, observer: observer?.forEventLoop(eventLoop))
        }
        self.loops = loops
    }

    /// The observer the connections of `eventLoop` report to.
    func loopObserver(for eventLoop: EventLoop) -> ExchangeObserver? { loops[ObjectIdentifier(eventLoop)]?.observer }

    /// Pause before accepting again after `accept` failed (fd limit reached, out of memory): without it
    /// the listener would retry at once, thousands of times a second.
    static let acceptBackoff = TimeAmount.milliseconds(250)

    /// Bytes queued for a client beyond which upstream reads stop (and below which they resume).
    /// With one upstream read of at most `UpstreamConnector.maxReadBytes` on top, a client that reads
    /// slowly holds at most ~16 KiB of response bytes in the proxy (nginx's default proxy buffers hold 36).
    static let clientWriteBuffer = WriteBufferWaterMark(low: 4 * 1024, high: 8 * 1024)

    /// Binds the listener; returns the bound address (useful with port 0).
    ///
    /// With more than one event loop, each loop gets its own listening socket on the address
    /// (`SO_REUSEPORT`) and accepts its own connections: handing an accepted connection to another
    /// loop costs a cross-thread wake-up and a chain of futures: a new connection cost a quarter more
    /// CPU that way. Before sharing the port, a plain bind checks nothing else holds it,
    /// so a second process on the same address still fails with "address in use".
    public func start(host: String, port: Int) async throws -> SocketAddress {
        var address = try SocketAddress.makeAddressResolvingHost(host, port: port)  // resolved once for all sockets
        let eventLoops = Array(group.makeIterator())
        guard eventLoops.count > 1 else {
            let channel = try await bind(to: address, on: group, sharingPort: false)
            state.withLockedValue { $0.serverChannels = [channel] }
            return try Self.address(of: channel)
        }
        if port != 0 {
            let probe = try await bind(to: address, on: eventLoops[0], sharingPort: false)
            try await probe.close()
        }
        var channels: [Channel] = []
        do {
            for eventLoop in eventLoops {
                let channel = try await bind(to: address, on: eventLoop, sharingPort: true)
                channels.append(channel)
                address.port = try Self.address(of: channel).port  // port 0: the others join the port given
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        state.withLockedValue { $0.serverChannels = channels }
        return try Self.address(of: channels[0])
    }

    private static func address(of channel: Channel) throws -> SocketAddress {
        guard let address = channel.localAddress else { throw ChannelError.inappropriateOperationForState }
        return address
    }

    /// A listening socket whose connections are served by `loops` (one loop, or the whole group).
    /// Each has its own descriptor reserve: at the open-file limit every socket can still accept once.
    private func bind(to address: SocketAddress, on loops: EventLoopGroup, sharingPort: Bool) async throws -> Channel {
        let observer = shared.observer
        let reserve = DescriptorReserve()
        return try await ServerBootstrap(group: loops, childGroup: loops)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: sharingPort ? 1 : 0)
            // Accepted sockets inherit it from the listening socket: no system call per connection.
            // (At IPPROTO_TCP: `socketOption(.tcp_nodelay)` would set SO_DEBUG, which only root may set.)
            .serverChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptBackoffHandler(shouldForwardIOErrorCaught: false) { error in
                            observer?.connectionEvent(.acceptFailed(errno: error.errnoCode))
                            if error.errnoCode == EMFILE || error.errnoCode == ENFILE { reserve.release() }
                            return Self.acceptBackoff
                        })
                }
            }
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.setClientOptions(of: channel)
                    if let tls = self.tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context))
                    }
                    let loop = self.loops[ObjectIdentifier(channel.eventLoop)]!
                    let atFileLimit = reserve.isReleased
                    guard !atFileLimit, self.track(channel) else {
                        observer?.connectionEvent(.refusedAtCapacity)
                        if atFileLimit { channel.closeFuture.whenComplete { _ in reserve.reacquire() } }
                        try channel.pipeline.syncOperations.addHandler(
                            CapacityRefusalHandler(requestIDHeader: self.shared.configuration.requestIDHeader, loop: loop))
                        return
                    }
                    try channel.pipeline.syncOperations.addHandler(ClientConnectionHandler(shared: self.shared, loop: loop))
                }
            }
            .bind(to: address)
            .get()
    }

    /// Options of an accepted connection, set in place: `childChannelOption` would chain a future per
    /// option on every accept.
    private static func setClientOptions(of channel: Channel) throws {
        guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
        try options.setOption(ChannelOptions.maxMessagesPerRead, value: 16)
        try options.setOption(ChannelOptions.writeBufferWaterMark, value: clientWriteBuffer)
    }

    /// The listening sockets: one per event loop, or one for the group when it has a single loop.
    var listeningSockets: [Channel] { state.withLockedValue { $0.serverChannels } }

    /// The open client connections.
    var openChannels: [Channel] { state.withLockedValue { Array($0.connections.values) } }

    /// Number of open client connections.
    public var openConnections: Int { state.withLockedValue { $0.connections.count } }

    /// Counts `channel` as open until it closes; false (and not counted) when `maxConnections` are open.
    private func track(_ channel: Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let limit = shared.configuration.maxConnections
        let admitted = state.withLockedValue { state in
            guard state.connections.count < limit else { return false }
            state.connections[id] = channel
            return true
        }
        guard admitted else { return false }
        channel.closeFuture.whenComplete { [self] _ in
            let drained: EventLoopPromise<Void>? = state.withLockedValue { state in
                state.connections[id] = nil
                return state.connections.isEmpty ? state.drained : nil
            }
            drained?.succeed()
        }
        return true
    }

    /// Stops accepting, lets in-flight exchanges finish within `grace`, then closes whatever is left.
    /// Returns true when every connection finished on its own.
    @discardableResult
    public func shutdown(grace: TimeAmount) async -> Bool {
        let eventLoop = group.next()
        let drained = eventLoop.makePromise(of: Void.self)
        // Every listening socket closes before the connections are counted: one still open could
        // accept a connection the count (and the quiesce below) would miss.
        let serverChannels = state.withLockedValue { $0.serverChannels }
        await withTaskGroup(of: Void.self) { closing in
            for channel in serverChannels { closing.addTask { try? await channel.close() } }
        }
        let connections = state.withLockedValue { state in
            state.drained = drained
            return Array(state.connections.values)
        }
        if connections.isEmpty { drained.succeed() }
        for channel in connections {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let timeout = eventLoop.scheduleTask(in: grace) { drained.fail(ChannelError.ioOnClosedChannel) }
        let clean = (try? await drained.futureResult.get()) != nil
        timeout.cancel()
        if !clean {
            let leftover = state.withLockedValue { Array($0.connections.values) }
            for channel in leftover {
                channel.pipeline.fireUserInboundEventTriggered(ShutdownGraceOver())
                try? await channel.close()
            }
        }
        for pool in loops.values.flatMap(\.pools) {
            try? await pool.eventLoop.submit { pool.closeAll() }.get()
        }
        return clean
    }
}

/// Told to each connection still open when `shutdown_grace` is over, just before it is closed: what
/// closes it then is the shutdown, not its peer.
public struct ShutdownGraceOver: Sendable {
    public init() {}
}
