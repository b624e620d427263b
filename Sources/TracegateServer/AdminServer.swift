import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin listener: `GET /healthz` (the process is alive), `GET /readyz` (ready to serve:
/// public listener bound, not draining, upstream host resolvable) and `GET /metrics` (Prometheus text).
/// Never served on the public port.
public final class AdminServer: Sendable {
    private let group: EventLoopGroup
    private let readiness: Readiness
    private let upstreamHost: String
    private let upstreamPort: Int
    private let metrics: TracegateMetrics?

    public init(
        group: EventLoopGroup, readiness: Readiness, upstreamHost: String, upstreamPort: Int, metrics: TracegateMetrics? = nil
    ) {
        self.group = group
        self.readiness = readiness
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
        self.metrics = metrics
    }

    public func start(host: String, port: Int) async throws -> Channel {
        let readiness = self.readiness
        let host_ = upstreamHost
        let port_ = upstreamPort
        let metrics = self.metrics
        return try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        AdminHandler(readiness: readiness, upstreamHost: host_, upstreamPort: port_, metrics: metrics))
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

/// Answers the admin routes; everything else is 404.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let readiness: Readiness
    private let upstreamHost: String
    private let upstreamPort: Int
    private let metrics: TracegateMetrics?
    private var head: HTTPRequestHead?

    init(readiness: Readiness, upstreamHost: String, upstreamPort: Int, metrics: TracegateMetrics?) {
        self.readiness = readiness
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
        self.metrics = metrics
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            route(head, context: context)
        }
    }

    private func route(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard head.method == .GET || head.method == .HEAD else {
            respond(.methodNotAllowed, #"{"error":"method not allowed"}"#, head: head, context: context)
            return
        }
        switch path {
        case "/healthz":
            respond(.ok, #"{"status":"ok"}"#, head: head, context: context)
        case "/metrics" where metrics != nil:
            respond(
                .ok, String(decoding: metrics!.exposition(), as: UTF8.self), contentType: "text/plain; version=0.0.4; charset=utf-8",
                head: head, context: context)
        case "/readyz":
            guard readiness.isReady else {
                respond(.serviceUnavailable, #"{"status":"not ready","reason":"starting or draining"}"#, head: head, context: context)
                return
            }
            // Resolving may block: do it off the event loop.
            let host = upstreamHost
            let port = upstreamPort
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.makeFutureWithTask {
                (try? await NIOThreadPool.singleton.runIfActive { try SocketAddress.makeAddressResolvingHost(host, port: port) }) != nil
            }.whenComplete { result in
                let (handler, context) = loopBound.value
                if case .success(true) = result {
                    handler.respond(.ok, #"{"status":"ready"}"#, head: head, context: context)
                } else {
                    handler.respond(
                        .serviceUnavailable, #"{"status":"not ready","reason":"upstream host does not resolve"}"#,
                        head: head, context: context)
                }
            }
        default:
            respond(.notFound, #"{"error":"not found"}"#, head: head, context: context)
        }
    }

    private func respond(
        _ status: HTTPResponseStatus, _ json: String, contentType: String = "application/json", head: HTTPRequestHead,
        context: ChannelHandlerContext
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: String(json.utf8.count))
        if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: json)))), promise: nil)
        }
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
