import NIOCore

/// What the client connections of one event loop share: an upstream pool per upstream route, the
/// generator of request ids, and the loop's own exchange observer. A generator per connection cost four
/// `getrandom` calls per accept to seed it; one per loop is seeded once.
///
/// Only ever touched on its own event loop, so it needs no lock (hence `@unchecked Sendable`).
final class LoopShared: @unchecked Sendable {
    let eventLoop: EventLoop
    /// One pool per upstream, in the order of `ProxyConfiguration.upstreams`.
    let pools: [UpstreamPool]
    /// The listener's observer as this loop sees it (`ExchangeObserver.forEventLoop`).
    let observer: ExchangeObserver?
    private var requestIDs = RequestIDGenerator()

    init(eventLoop: EventLoop, pools: [UpstreamPool], observer: ExchangeObserver?) {
        self.eventLoop = eventLoop
        self.pools = pools
        self.observer = observer
    }

    func pool(for route: UpstreamRoute) -> UpstreamPool { pools[route.index] }

    /// A new request id (a version-4 UUID).
    func generateRequestID() -> String {
        eventLoop.assertInEventLoop()
        return requestIDs.generate()
    }
}
