import AsyncHTTPClient
import Foundation
import Dispatch
import Logging
import NIOConcurrencyHelpers
import TracegateConfig
import TracegateExport
import TracegateTrace

/// From captured exchanges to MLflow (or to the trace file when there is no tracking server):
/// builds each trace on a background queue, never on an event loop, and hands it on.
///
/// Event loops only append captures to a locked array; a timer drains it every few milliseconds,
/// so a busy proxy wakes the builder thread 200 times a second, not once per request.
/// Holds at most `maxPending` captures waiting to be built.
final class TracingPipeline: @unchecked Sendable {
    private enum Destination: Sendable {
        case mlflow(TraceExporter, HTTPClient)
        case file(TraceFileWriter)
    }

    private let destination: Destination
    private let builder: TraceBuilder
    private let queue = DispatchQueue(label: "tracegate.trace-builder")
    private let pending = NIOLockedValueBox([CapturedExchange]())
    private let maxPending = 1_000
    private let drainTimer: DispatchSourceTimer
    /// Traces dropped because the builder fell behind; logged at most every 10 s.
    private let overload = NIOLockedValueBox((dropped: 0, lastLog: ContinuousClock.now - .seconds(60)))
    private let logger: Logger
    /// Counts token usage of the traces built; set once before serving.
    private var metrics: TracegateMetrics?
    /// Delivers to MLflow until `finish`; nil in file mode.
    private let exporterRun: Task<Void, Never>?

    /// Nil when traces go nowhere (capture off, or no tracking server and no trace file).
    init?(settings: TracegateSettings, logger: Logger) throws {
        if settings.capture == .off {
            logger.notice("capture = off: no traces are made")
            return nil
        }
        if let trackingURI = settings.mlflowTrackingURI {
            var spool: ExportSpool?
            if let directory = settings.spoolDir {
                spool = try ExportSpool(directory: directory, maxBytes: settings.spoolMaxBytes)
            } else {
                logger.warning("no spool_dir: traces the tracking server cannot take in time are dropped (counted)")
            }
            let (exporter, http) = Self.makeExporter(trackingURI: trackingURI, settings: settings, logger: logger, spool: spool)
            destination = .mlflow(exporter, http)
            exporterRun = Task { await exporter.run() }
            logger.info("exporting traces to MLflow", metadata: ["tracking_uri": "\(trackingURI)"])
        } else if let path = settings.traceFile {
            destination = .file(try TraceFileWriter(path: path))
            exporterRun = nil
            logger.notice("no MLFLOW_TRACKING_URI: traces are appended to \(path); send them with `tracegate push \(path)`")
        } else {
            logger.notice("no MLFLOW_TRACKING_URI and no trace_file: traces are not kept")
            return nil
        }
        builder = TraceBuilder(
            staticTags: settings.traceTags.pairs, errorOn4xx: settings.traceErrorOn4xx, capturesBodies: settings.capture == .full,
            redaction: Redaction(settings: settings))
        self.logger = logger
        drainTimer = DispatchSource.makeTimerSource(queue: queue)
        drainTimer.schedule(deadline: .now() + .milliseconds(5), repeating: .milliseconds(5))
        drainTimer.setEventHandler { [weak self] in self?.drain() }
        drainTimer.resume()
    }

    /// The exporter for `settings`, and the HTTP client it uses (to be shut down after it).
    static func makeExporter(
        trackingURI: String, settings: TracegateSettings, logger: Logger, spool: ExportSpool? = nil
    ) -> (TraceExporter, HTTPClient) {
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
        configuration.drainTimeout = settings.exportDrainTimeout
        return (TraceExporter(configuration: configuration, sink: client, logger: logger, spool: spool), http)
    }

    /// Reports token usage and delivery figures to `metrics` (call before serving).
    func attach(_ metrics: TracegateMetrics) {
        self.metrics = metrics
        guard case .mlflow(let exporter, _) = destination else { return }
        metrics.setDeliverySource {
            let stats = exporter.stats
            return DeliverySnapshot(
                queued: exporter.queuedTraces, exported: stats.exported, retries: stats.retries, dropped: stats.dropped,
                rejected: stats.rejected, traceInfoFailures: stats.startTraceFailures + stats.traceInfoDropped,
                spooled: stats.spooled, replayed: stats.replayed, spoolTraces: exporter.spooledTraces,
                spoolBytes: exporter.spooledBytes)
        }
    }

    /// Called on event loops when an exchange ends: O(1), never blocks.
    func deliver(_ captured: CapturedExchange) {
        let accepted = pending.withLockedValue { pending in
            guard pending.count < maxPending else { return false }
            pending.append(captured)
            return true
        }
        guard accepted else {
            let report: Int? = overload.withLockedValue { state in
                state.dropped += 1
                guard ContinuousClock.now - state.lastLog >= .seconds(10) else { return nil }
                state.lastLog = .now
                return state.dropped
            }
            if let report { logger.warning("trace building cannot keep up: \(report) traces dropped so far") }
            return
        }
    }

    /// Builds and hands on everything waiting; runs on `queue`.
    private func drain() {
        let captures = pending.withLockedValue { pending in
            defer { pending.removeAll(keepingCapacity: true) }
            return pending
        }
        for captured in captures {
            if !captured.sampled && !builder.isError(captured) { continue }
            if case .mlflow(let exporter, _) = destination, exporter.isFull {
                exporter.countDropped()  // the tracking server is behind: don't spend CPU on a trace it can't take
                continue
            }
            let record = builder.record(for: captured)
            if let metrics { Self.countTokens(of: record, into: metrics) }
            switch destination {
            case .mlflow(let exporter, _):
                exporter.submit(record)
            case .file(let writer):
                do { try writer.append(record) } catch { logger.error("cannot write the trace file: \(error)") }
            }
        }
    }

    private struct Usage: Decodable {
        var input_tokens: Int?
        var output_tokens: Int?
    }

    private static func countTokens(of record: TraceRecord, into metrics: TracegateMetrics) {
        guard case .string(let json)? = record.attributes[TraceAttributeKey.tokenUsage],
            let usage = try? JSONDecoder().decode(Usage.self, from: Data(json.utf8))
        else { return }
        var model: String?
        if case .string(let name)? = record.attributes[TraceAttributeKey.model] { model = name }
        metrics.countTokens(model: model, input: usage.input_tokens ?? 0, output: usage.output_tokens ?? 0)
    }

    /// Builds what is waiting and delivers everything queued.
    func finish() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            queue.async { [self] in
                drainTimer.cancel()
                drain()
                done.resume()
            }
        }
        guard case .mlflow(let exporter, let http) = destination, let exporterRun else { return }
        exporter.shutdown()
        await exporterRun.value
        try? await http.shutdown()
        let stats = exporter.stats
        logger.info(
            "trace export finished",
            metadata: [
                "exported": "\(stats.exported)", "retries": "\(stats.retries)", "dropped": "\(stats.dropped)",
                "rejected": "\(stats.rejected)", "trace_info_failures": "\(stats.startTraceFailures + stats.traceInfoDropped)",
                "spooled": "\(exporter.spooledTraces)",
            ])
    }
}

extension Redaction {
    init(settings: TracegateSettings) {
        var patterns: [String] = []
        for builtin in settings.redactBuiltin {
            switch builtin {
            case .apiKeys: patterns.append(Redaction.apiKeyPattern)
            case .emails: patterns.append(Redaction.emailPattern)
            }
        }
        if let regex = settings.redactRegex { patterns.append(regex) }
        self.init(jsonPaths: settings.redactJSONFields, patterns: patterns)
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
        let redacted = Set(settings.redactHeaders.map { $0.lowercased() })
        headerTags = settings.tagHeaders.pairs.filter { !redacted.contains($0.0.lowercased()) }.map { (header: $0.0, tag: $0.1) }
        upstream = settings.upstream.description
        sampleRatio = settings.sampleRatio
        forceTraceHeader = settings.forceTraceHeader
    }
}
