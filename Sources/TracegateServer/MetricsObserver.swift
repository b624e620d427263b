import Foundation
import NIOConcurrencyHelpers
import Prometheus
import TracegateProxy
import TracegateTrace

/// Counts every exchange for `TracegateMetrics`. Cheap: a few atomic increments per exchange.
final class MetricsObserver: ExchangeObserver {
    private let metrics: TracegateMetrics

    init(metrics: TracegateMetrics) { self.metrics = metrics }

    func exchangeStarted(_ head: RequestHead, requestID: String) -> ExchangeTap? {
        metrics.inFlight.increment()
        return nil
    }

    func responseStarted(streamed: Bool) {
        if streamed { metrics.streamsOpen.increment() }
    }

    /// A tunnel counts in `tracegate_websocket_tunnels_open` instead of `tracegate_requests_in_flight`.
    func tunnelOpened() {
        metrics.inFlight.decrement()
        metrics.tunnelsOpen.increment()
    }

    func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {
        if summary.forwarded && summary.tunnel == nil { metrics.inFlight.decrement() }
        if let tunnel = summary.tunnel {
            metrics.tunnelsOpen.decrement()
            if tunnel.bytesFromClient > 0 { metrics.tunnelBytes[0].increment(by: Int64(tunnel.bytesFromClient)) }
            if tunnel.bytesFromUpstream > 0 { metrics.tunnelBytes[1].increment(by: Int64(tunnel.bytesFromUpstream)) }
            if tunnel.framesFromClient > 0 { metrics.tunnelFrames[0].increment(by: Int64(tunnel.framesFromClient)) }
            if tunnel.framesFromUpstream > 0 { metrics.tunnelFrames[1].increment(by: Int64(tunnel.framesFromUpstream)) }
            metrics.tunnelsClosed[tunnel.closedAtShutdown ? 2 : tunnel.closedIdle ? 1 : tunnel.closedStalled ? 3 : 0].increment()
        }
        if summary.streamed { metrics.streamsOpen.decrement() }
        let method = TracegateMetrics.methodIndex(summary.method.rawValue)
        metrics.requests[method][TracegateMetrics.statusClassIndex(summary.status)].increment()
        metrics.requestDuration.recordNanoseconds(summary.duration.nanoseconds)
        if let ttfb = summary.timeToFirstByte { metrics.upstreamTimeToFirstByte.recordNanoseconds(ttfb.nanoseconds) }
        if summary.requestBodyBytes > 0 { metrics.requestBytes.increment(by: Int64(summary.requestBodyBytes)) }
        if summary.responseBodyBytes > 0 { metrics.responseBytes.increment(by: Int64(summary.responseBodyBytes)) }
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
