import Logging
import NIOCore
import ServiceLifecycle
import TracegateProxy

/// The public listener, bound before the group runs. Ready while it runs; stopped first: it stops
/// accepting, drains the exchanges in flight for at most `shutdown_grace`, then waits until every
/// event loop has queued the traces it was about to build in place.
struct ProxyService: Service {
    let listener: ProxyListener
    let readiness: Readiness
    let grace: Duration
    let eventLoops: EventLoopGroup
    /// The loopback server behind `feedback_path`, closed once no exchange can reach it.
    let feedbackServer: Channel?
    let logger: Logger

    func run() async {
        readiness.set(true)
        try? await gracefulShutdown()
        logger.info("shutting down: draining the exchanges in flight", metadata: ["grace": "\(grace)"])
        readiness.set(false)
        let clean = await listener.shutdown(grace: TimeAmount(grace))
        if !clean { logger.warning("grace period over: closed the connections still open") }
        try? await feedbackServer?.close()
        for loop in eventLoops.makeIterator() { try? await loop.submit {}.get() }
    }
}
