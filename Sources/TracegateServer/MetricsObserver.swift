import Foundation
import NIOCore
import NIOConcurrencyHelpers
import Prometheus
import TracegateProxy
import TracegateTrace

/// Counts every exchange for `TracegateMetrics`: a few plain stores per exchange into counters of its
/// own (`ExchangeCounters`). Each event loop gets its own instance (`forEventLoop`), and an instance
/// is used by one loop only.
final class MetricsObserver: ExchangeObserver {
    private let metrics: TracegateMetrics
    private let counters: ExchangeCounters

    /// The listener's instance: its own exchange calls count nowhere (each loop's instance counts).
    convenience init(metrics: TracegateMetrics) { self.init(metrics: metrics, counters: ExchangeCounters()) }

    private init(metrics: TracegateMetrics, counters: ExchangeCounters) {
        self.metrics = metrics
        self.counters = counters
    }

    func forEventLoop(_ eventLoop: EventLoop) -> ExchangeObserver {
        MetricsObserver(metrics: metrics, counters: metrics.makeExchangeCounters())
    }

    func exchangeStarted(_ head: RequestHead, requestID: String) -> ExchangeTap? {
        counters.add(1, at: ExchangeCounters.Layout.inFlight)
        return nil
    }

    func responseStarted(streamed: Bool) {
        if streamed { counters.add(1, at: ExchangeCounters.Layout.streamsOpen) }
    }

    /// A tunnel counts in `tracegate_websocket_tunnels_open` instead of `tracegate_requests_in_flight`.
    func tunnelOpened() {
        counters.add(-1, at: ExchangeCounters.Layout.inFlight)
        metrics.tunnelsOpen.increment()
    }

    func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {
        if summary.forwarded && summary.tunnel == nil { counters.add(-1, at: ExchangeCounters.Layout.inFlight) }
        if let tunnel = summary.tunnel {
            metrics.tunnelsOpen.decrement()
            if tunnel.bytesFromClient > 0 { metrics.tunnelBytes[0].increment(by: Int64(tunnel.bytesFromClient)) }
            if tunnel.bytesFromUpstream > 0 { metrics.tunnelBytes[1].increment(by: Int64(tunnel.bytesFromUpstream)) }
            if tunnel.framesFromClient > 0 { metrics.tunnelFrames[0].increment(by: Int64(tunnel.framesFromClient)) }
            if tunnel.framesFromUpstream > 0 { metrics.tunnelFrames[1].increment(by: Int64(tunnel.framesFromUpstream)) }
            metrics.tunnelsClosed[tunnel.closedAtShutdown ? 2 : tunnel.closedIdle ? 1 : tunnel.closedStalled ? 3 : 0].increment()
        }
        if summary.streamed { counters.add(-1, at: ExchangeCounters.Layout.streamsOpen) }
        counters.countRequest(
            method: TracegateMetrics.methodIndex(summary.method), statusClass: TracegateMetrics.statusClassIndex(summary.status))
        counters.record(nanoseconds: summary.duration.nanoseconds, in: ExchangeCounters.Layout.duration)
        if let ttfb = summary.timeToFirstByte {
            counters.record(nanoseconds: ttfb.nanoseconds, in: ExchangeCounters.Layout.timeToFirstByte)
        }
        if summary.requestBodyBytes > 0 { counters.add(summary.requestBodyBytes, at: ExchangeCounters.Layout.requestBytes) }
        if summary.responseBodyBytes > 0 { counters.add(summary.responseBodyBytes, at: ExchangeCounters.Layout.responseBytes) }
    }

    func connectionEvent(_ event: ConnectionEvent) {
        switch event {
        case .acceptFailed: metrics.acceptErrors.increment()
        case .refusedAtCapacity: metrics.connectionsRefused.increment()
        case .clientHeaderTimeout: metrics.clientTimeouts[0].increment()
        case .clientBodyTimeout: metrics.clientTimeouts[1].increment()
        case .sendTimeout: metrics.clientTimeouts[2].increment()
        }
    }
}
