import NIOCore
import NIOPosix
import ServiceLifecycle

/// The admin endpoints, bound before the group runs on a thread of their own (a metrics scrape reads
/// figures the exporters keep under locks that their idle-priority thread may hold: waiting for one
/// must never stall forwarding). Stopped right after the listener, so `/readyz` answers 503 while
/// it drains.
struct AdminService: Service {
    let channel: Channel
    let eventLoops: MultiThreadedEventLoopGroup

    func run() async {
        try? await gracefulShutdown()
        try? await channel.close()
        try? await eventLoops.shutdownGracefully()
    }
}
