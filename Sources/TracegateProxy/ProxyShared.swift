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
    /// One per upstream (the default upstream, then each route's).
    private let requestRewriters: [RequestHeadRewriter]
    let routes: RouteTable
    let responseRewriter: ResponseHeadRewriter
    let observer: ExchangeObserver?
    let tunnels: TunnelAdmission

    init(configuration: ProxyConfiguration, observer: ExchangeObserver?, scheme: String = "http") {
        self.configuration = configuration
        self.requestRewriters = configuration.upstreams.map {
            RequestHeadRewriter(configuration: configuration, upstream: $0, scheme: scheme)
        }
        self.routes = RouteTable(configuration.routes.map(\.rule))
        self.responseRewriter = ResponseHeadRewriter(requestIDHeader: configuration.requestIDHeader)
        self.observer = observer
        self.tunnels = TunnelAdmission(limit: configuration.maxWebSocketConnections)
    }

    func requestRewriter(for route: UpstreamRoute) -> RequestHeadRewriter { requestRewriters[route.index] }
}
