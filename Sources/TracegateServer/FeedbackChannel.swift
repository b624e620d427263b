import AsyncHTTPClient
import Logging
import NIOConcurrencyHelpers
import TracegateConfig
import TracegateExport
import TracegateTrace

/// Feedback's side of the tracing pipeline: the index of recent traces the builder fills, and the
/// delivery of queued feedback to MLflow (its spool in `spool_dir/feedback`; `FeedbackDeliveryService`
/// runs it).
final class FeedbackChannel: Sendable {
    static let rememberedTraces = 100_000

    let recent = NIOLockedValueBox(RecentTraceIndex(capacity: FeedbackChannel.rememberedTraces))
    let delivery: FeedbackDelivery
    private let client: MLflowClient
    private let experimentIDs: @Sendable () -> [String]

    init(
        settings: TracegateSettings, trackingURI: String, spoolDir: String, http: HTTPClient,
        experimentIDs: @escaping @Sendable () -> [String], logger: Logger
    ) throws {
        client = TracingPipeline.mlflowClient(trackingURI: trackingURI, settings: settings, http: http, timeout: .seconds(10))
        let delivery = try FeedbackDelivery(sink: client, directory: spoolDir + "/feedback", logger: logger)
        self.delivery = delivery
        self.experimentIDs = experimentIDs
    }

    /// Called by the builder for each trace going to MLflow.
    func remember(_ record: TraceRecord) {
        guard let requestID = record.clientRequestID else { return }
        let traceID = record.traceID.mlflowID
        recent.withLockedValue { $0.remember(requestID: requestID, traceID: traceID) }
    }

    func service(settings: TracegateSettings) -> FeedbackService {
        let client = self.client
        let experimentIDs = self.experimentIDs
        let lookup = FeedbackService.Lookup(
            traceExists: { id in
                // Only traces of the experiments tracegate exports to: the endpoint is open to clients, and
                // tracegate's credentials may reach other experiments.
                do {
                    let info = try await client.traceInfo(traceID: id)
                    return Feedback.experimentID(inTraceInfo: info).map { experimentIDs().contains($0) } ?? false
                } catch MLflowError.rejected(404, _) {
                    return false
                }
            },
            traceIDForRequestID: { requestID in
                try await client.traceID(clientRequestID: requestID, experimentIDs: experimentIDs())
            })
        return FeedbackService(
            recent: recent, delivery: delivery, lookup: lookup, identity: IdentityResolver(settings: settings),
            cors: CORSPolicy(origins: settings.feedbackCORSOrigins), ratePerSecond: settings.feedbackRateLimit)
    }
}
