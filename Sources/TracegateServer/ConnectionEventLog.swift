import Foundation
import Logging
import TracegateExport
import TracegateProxy

/// Logs the connection limits the data plane enforces, each kind at most once a second with its
/// running total, so an attack cannot flood the log.
final class ConnectionEventLog: ExchangeObserver {
    private let logger: Logger
    private let acceptFailures = LogThrottle(interval: .seconds(1))
    private let refusals = LogThrottle(interval: .seconds(1))

    init(logger: Logger) { self.logger = logger }

    func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {}

    func connectionEvent(_ event: ConnectionEvent) {
        switch event {
        case .acceptFailed(let code):
            guard let total = acceptFailures.record() else { return }
            let reason = String(cString: strerror(code)).lowercased()
            logger.error("accept() failed: \(reason) (errno \(code)); accepting paused for 250ms (\(total) failures so far)")
        case .refusedAtCapacity:
            guard let total = refusals.record() else { return }
            logger.warning("max_connections reached: new connections are answered 503 (\(total) so far)")
        case .clientHeaderTimeout, .clientBodyTimeout, .sendTimeout:
            break  // counted in tracegate_client_timeouts_total; routine under slow clients
        }
    }
}
