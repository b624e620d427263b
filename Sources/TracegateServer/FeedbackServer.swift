import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves `feedback_path` on a loopback port of its own, which the proxy routes the path to like an
/// upstream: the public listener's limits, timeouts and keep-alive apply unchanged, and nothing at
/// that path is ever forwarded to the real upstream.
final class FeedbackServer: Sendable {
    private let group: EventLoopGroup
    private let service: FeedbackService

    init(group: EventLoopGroup, service: FeedbackService) {
        self.group = group
        self.service = service
    }

    /// Binds `127.0.0.1` on a free port.
    func start() async throws -> Channel {
        let service = self.service
        return try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(FeedbackHandler(service: service))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }
}

/// Reads one request (its body up to `FeedbackService.maxBodyBytes`), asks the service, writes the answer.
final class FeedbackHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let service: FeedbackService
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var tooLarge = false

    init(service: FeedbackService) { self.service = service }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = nil
            tooLarge = false
        case .body(var part):
            guard !tooLarge else { return }
            if (body?.readableBytes ?? 0) + part.readableBytes > FeedbackService.maxBodyBytes {
                tooLarge = true
                body = nil
            } else if body == nil {
                body = part
            } else {
                body!.writeBuffer(&part)
            }
        case .end:
            guard let head else { return }
            self.head = nil
            if tooLarge {
                write(.error(.payloadTooLarge, "feedback bodies are at most 64 KiB"), for: head, context: context)
                return
            }
            let service = self.service
            let body = self.body
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.makeFutureWithTask {
                await service.answer(method: head.method, uri: head.uri, headers: head.headers, body: body)
            }.whenSuccess { answer in
                let (handler, context) = loopBound.value
                handler.write(answer, for: head, context: context)
            }
        }
    }

    private func write(_ answer: FeedbackAnswer, for head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        if !answer.json.isEmpty { headers.add(name: "content-type", value: "application/json") }
        headers.add(name: "content-length", value: String(answer.json.utf8.count))
        for (name, value) in answer.headers { headers.add(name: name, value: value) }
        if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: answer.status, headers: headers))), promise: nil)
        if !answer.json.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: answer.json)))), promise: nil)
        }
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
