import NIOCore

/// Answers a connection accepted beyond `maxConnections` (or at the open-file limit): a 503 with a
/// JSON body, then close.
///
/// The client's request is not read, and the connection closes as soon as the answer is written: a
/// refused connection must not hold a descriptor (lingering to drain the request would let a flood of
/// refused connections exhaust the open-file limit). A client whose request bytes were already on the
/// way may see a reset instead of the answer.
final class CapacityRefusalHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let requestIDHeader: String
    private let loop: LoopShared

    init(requestIDHeader: String, loop: LoopShared) {
        self.requestIDHeader = requestIDHeader
        self.loop = loop
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { refuse(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        refuse(context: context)
        context.fireChannelActive()
    }

    private var refused = false

    private func refuse(context: ChannelHandlerContext) {
        guard !refused else { return }
        refused = true
        let bytes = ProxyError.tooManyConnections.response(
            requestID: loop.generateRequestID(), requestIDHeader: requestIDHeader, version: .http1_1, closes: true,
            extraHeaders: [("retry-after", "1")], allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(NIOAny(bytes)).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}  // the request is not served

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
