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
    /// Per event loop, one pool per target.
    private let pools: [ObjectIdentifier: [UpstreamPool]]
    private let tls: ServerTLS?
    private let state = NIOLockedValueBox(State())

    private struct State {
        var serverChannel: Channel?
        var connections: [ObjectIdentifier: Channel] = [:]
        var drained: EventLoopPromise<Void>?
    }

    /// - Parameter tls: serve HTTPS with this certificate (nil: plain HTTP).
    public init(configuration: ProxyConfiguration, group: EventLoopGroup, observer: ExchangeObserver?, tls: ServerTLS? = nil) throws {
        self.shared = ProxyShared(configuration: configuration, observer: observer, scheme: tls == nil ? "http" : "https")
        self.tls = tls
        self.group = group
        let connectors = try configuration.targets.map { try UpstreamConnector(upstream: $0, configuration: configuration) }
        var pools: [ObjectIdentifier: [UpstreamPool]] = [:]
        for eventLoop in group.makeIterator() {
            pools[ObjectIdentifier(eventLoop)] = connectors.map {
                UpstreamPool(eventLoop: eventLoop, connector: $0, maxIdle: configuration.upstreamPoolSize)
            }
        }
        self.pools = pools
    }

    /// Binds the listener; returns the bound address (useful with port 0).
    public func start(host: String, port: Int) async throws -> SocketAddress {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = self.tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context))
                    }
                    let pools = self.pools[ObjectIdentifier(channel.eventLoop)]!
                    try channel.pipeline.syncOperations.addHandler(ClientConnectionHandler(shared: self.shared, pools: pools))
                    self.track(channel)
                }
            }
            .bind(host: host, port: port)
            .get()
        state.withLockedValue { $0.serverChannel = channel }
        guard let address = channel.localAddress else { throw ChannelError.inappropriateOperationForState }
        return address
    }

    /// Number of open client connections.
    public var openConnections: Int { state.withLockedValue { $0.connections.count } }

    private func track(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        state.withLockedValue { $0.connections[id] = channel }
        channel.closeFuture.whenComplete { [self] _ in
            let drained: EventLoopPromise<Void>? = state.withLockedValue { state in
                state.connections[id] = nil
                return state.connections.isEmpty ? state.drained : nil
            }
            drained?.succeed()
        }
    }

    /// Stops accepting, lets in-flight exchanges finish within `grace`, then closes whatever is left.
    /// Returns true when every connection finished on its own.
    @discardableResult
    public func shutdown(grace: TimeAmount) async -> Bool {
        let eventLoop = group.next()
        let drained = eventLoop.makePromise(of: Void.self)
        let (serverChannel, connections) = state.withLockedValue { state in
            state.drained = drained
            return (state.serverChannel, Array(state.connections.values))
        }
        try? await serverChannel?.close()
        if connections.isEmpty || openConnections == 0 { drained.succeed() }
        for channel in connections {
            channel.pipeline.fireUserInboundEventTriggered(QuiesceEvent())
        }
        let timeout = eventLoop.scheduleTask(in: grace) { drained.fail(ChannelError.ioOnClosedChannel) }
        let clean = (try? await drained.futureResult.get()) != nil
        timeout.cancel()
        if !clean {
            let leftover = state.withLockedValue { Array($0.connections.values) }
            for channel in leftover { try? await channel.close() }
        }
        for pool in pools.values.joined() {
            try? await pool.eventLoop.submit { pool.closeAll() }.get()
        }
        return clean
    }
}
