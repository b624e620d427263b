import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

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
