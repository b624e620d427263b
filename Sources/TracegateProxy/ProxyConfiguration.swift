import NIOCore

/// Everything the data plane needs to know, resolved once at start-up.
public struct ProxyConfiguration: Sendable {
    /// Where requests are forwarded.
    public struct Upstream: Sendable {
        public var host: String
        public var port: Int
        public var usesTLS: Bool
        /// Prepended to every request path; empty or starting with `/`, never ending with `/`.
        public var basePath: String
        /// Verify the upstream's certificate chain and host name (https only).
        public var verifyCertificate: Bool
        /// PEM bundle of trusted CAs instead of the system store (https only).
        public var caFile: String?

        public init(
            host: String, port: Int, usesTLS: Bool, basePath: String = "",
            verifyCertificate: Bool = true, caFile: String? = nil
        ) {
            self.host = host
            self.port = port
            self.usesTLS = usesTLS
            self.basePath = basePath
            self.verifyCertificate = verifyCertificate
            self.caFile = caFile
        }

        /// The `Host` header value for this upstream: the port is omitted when it is the scheme's default.
        public var hostHeader: String {
            let defaultPort = usesTLS ? 443 : 80
            let name = host.contains(":") ? "[\(host)]" : host
            return port == defaultPort ? name : "\(name):\(port)"
        }
    }

    /// Which forwarding headers are added to requests.
    public enum ForwardedHeaders: Sendable {
        case xForwarded, via, both, none
        var addsXForwarded: Bool { self == .xForwarded || self == .both }
        var addsVia: Bool { self == .via || self == .both }
    }

    /// Requests no route takes go here.
    public var upstream: Upstream
    /// Other upstreams, chosen by path prefix (and host): see `RouteTable`.
    public var routes: [Route] = []

    public struct Route: Sendable {
        public var rule: RouteTable.Rule
        public var upstream: Upstream

        public init(rule: RouteTable.Rule, upstream: Upstream) {
            self.rule = rule
            self.upstream = upstream
        }
    }

    /// The default upstream, then each route's, indexed by `UpstreamRoute.index`.
    var upstreams: [Upstream] { [upstream] + routes.map(\.upstream) }
    /// Send the client's `Host` upstream instead of the upstream's own.
    public var preserveHost: Bool = false
    public var forwardedHeaders: ForwardedHeaders = .xForwarded
    /// Add a `Server-Timing` header to forwarded responses.
    public var serverTiming: Bool = true
    /// Header carrying the request id (generated when absent).
    public var requestIDHeader: String = "X-Request-ID"
    /// Idle keep-alive upstream connections kept per event loop.
    public var upstreamPoolSize: Int = 64
    public var connectTimeout: TimeAmount = .seconds(5)
    /// From the end of the request to the upstream's response head.
    public var firstByteTimeout: TimeAmount = .seconds(300)
    /// Longest silence on an exchange that is transferring a body.
    public var idleTimeout: TimeAmount = .seconds(300)
    /// How long an idle client keep-alive connection stays open.
    public var clientKeepaliveTimeout: TimeAmount = .seconds(75)
    /// Time a client has to send a whole request head, from its first byte (or from the connection's
    /// start, for its first request); then 408 (or a silent close when nothing was sent).
    public var clientHeaderTimeout: TimeAmount = .seconds(60)
    /// Longest wait between two reads of a request body; then 408.
    public var clientBodyTimeout: TimeAmount = .seconds(60)
    /// Longest time a client may take nothing of what is written to it; then the connection is closed.
    public var sendTimeout: TimeAmount = .seconds(60)
    /// Client connections open at once; connections beyond it are answered 503 and closed.
    public var maxConnections: Int = 10_000
    /// WebSocket tunnels open at once; an upgrade beyond it is answered 503.
    public var maxWebSocketConnections: Int = 1_000
    /// A tunnel with no byte either way for this long is closed.
    public var webSocketIdleTimeout: TimeAmount = .hours(1)
    /// Request bodies declared (`Content-Length`) of at most this many bytes are read whole before an
    /// upstream connection is taken, so a slow upload holds no upstream connection; larger and chunked
    /// ones stream. 0: always stream.
    public var requestBufferingBytes: Int = 64 * 1024
    /// Largest accepted request head; NIO's parser caps it at 80 KiB.
    public var maxHeaderBytes: Int = 32 * 1024
    /// Largest accepted request body; `nil` means unlimited.
    public var maxBodyBytes: Int? = 64 * 1024 * 1024

    public init(upstream: Upstream) {
        self.upstream = upstream
    }
}
