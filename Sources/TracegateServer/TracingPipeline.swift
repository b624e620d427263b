import AsyncHTTPClient
import Dispatch
import Logging
import NIOConcurrencyHelpers
import TracegateConfig
import TracegateExport
import TracegateTrace

/// From captured exchanges to MLflow: builds each trace on a background queue (never on an event
/// loop) and hands it to the exporter. Holds at most `maxPending` captures waiting to be built.
final class TracingPipeline: Sendable {
    let exporter: TraceExporter
    private let builder: TraceBuilder
    private let queue = DispatchQueue(label: "tracegate.trace-builder")
    private let pending = NIOLockedValueBox(0)
    private let maxPending = 10_000
    private let http: HTTPClient
    private let logger: Logger

    init?(settings: TracegateSettings, logger: Logger) {
        guard let trackingURI = settings.mlflowTrackingURI else { return nil }
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        let client = MLflowClient(
            trackingURI: trackingURI,
            auth: .resolve(
                username: settings.mlflowTrackingUsername, password: settings.mlflowTrackingPassword,
                token: settings.mlflowTrackingToken),
            http: http)
        let experiment: ExperimentSource
        if let id = settings.mlflowExperimentID {
            experiment = .id(id)
        } else if let name = settings.mlflowExperimentName {
            experiment = .resolve(name: name, using: { try await client.experimentID(named: $0) })
        } else {
            experiment = .id("0")  // MLflow's Default experiment, as its own client does
        }
        var configuration = ExporterConfiguration(experiment: experiment)
        configuration.maxBatchTraces = settings.exportBatchSize
        configuration.maxBatchDelay = settings.exportBatchDelay
        configuration.startTraceConcurrency = settings.exportConcurrency
        self.exporter = TraceExporter(configuration: configuration, sink: client, logger: logger)
        self.builder = TraceBuilder(staticTags: settings.traceTags.pairs, errorOn4xx: settings.traceErrorOn4xx)
        self.http = http
        self.logger = logger
    }

    /// Called on event loops when an exchange ends: O(1), never blocks.
    func deliver(_ captured: CapturedExchange) {
        let accepted = pending.withLockedValue { count in
            guard count < maxPending else { return false }
            count += 1
            return true
        }
        guard accepted else {
            logger.warning("trace builder overloaded: a trace was dropped")
            return
        }
        queue.async { [self] in
            exporter.submit(builder.record(for: captured))
            pending.withLockedValue { $0 -= 1 }
        }
    }

    /// Builds what is waiting, delivers everything queued, and closes the HTTP client.
    func finish(exporterRun: Task<Void, Never>) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in queue.async { done.resume() } }
        exporter.shutdown()
        await exporterRun.value
        try? await http.shutdown()
        let stats = exporter.stats
        logger.info(
            "trace export finished",
            metadata: [
                "exported": "\(stats.exported)", "retries": "\(stats.retries)", "dropped": "\(stats.dropped)",
                "rejected": "\(stats.rejected)",
            ])
    }
}

extension TraceCaptureSettings {
    init(settings: TracegateSettings) {
        self.init()
        userHeader = settings.userHeader
        sessionHeader = settings.sessionHeader
        requestIDHeader = settings.requestIDHeader
        traceIDResponseHeader = settings.traceIDHeader
        maxCapturedBodyBytes = settings.captureMaxBodyBytes
        headerTags = settings.tagHeaders.pairs.map { (header: $0.0, tag: $0.1) }
        upstream = settings.upstream.description
    }
}
