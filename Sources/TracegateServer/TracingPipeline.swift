import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOConcurrencyHelpers
import ServiceLifecycle
import TracegateConfig
import TracegateExport
import TracegateProxy
import TracegateTrace

/// From captured exchanges to MLflow and/or an OpenTelemetry backend (or to the trace file when
/// there is neither): builds each trace on a background queue, never on an event loop, and hands it
/// to every exporter, each with its own memory queue and spool (`spool_dir/mlflow`, `spool_dir/otlp`).
///
/// Event loops only append captures to a bounded, lock-free `CaptureQueue`, and free them once they
/// come back built (`LoopReturns`): the builder never takes a loop's malloc arena lock. The builder thread sleeps
/// until a capture arrives (`ThreadWakeSignal`), then gathers for 5 ms and drains the queue: a busy proxy
/// wakes it at most 200 times a second, not once per request, and an idle one not at all. The builder
/// thread, and the exporters with their HTTP client (`ExportExecutor`), run only when a CPU would
/// otherwise idle (`SCHED_IDLE`), in bursts of at most 50 µs (`BackgroundThread`): when the CPU is
/// saturated forwarding wins, and an event loop never waits behind trace work.
/// Once the queue is full, and while every tracking server answers but is `export_backlog_limit`
/// traces behind, event loops stop capturing new exchanges (they are forwarded untraced, without a
/// trace id header); those are counted and logged, never requests slowed.
///
/// It runs as services (`services`): the builder thread, each exporter, the feedback delivery, and the
/// HTTP client they share, stopped in that order.
///
/// `@unchecked Sendable`: every `let` is itself `Sendable` or set before the builder thread starts
/// (`TraceBuilderService` starts it after `init`); the few `var`s (marked "builder thread only") are
/// touched by that thread alone.
final class TracingPipeline: @unchecked Sendable {
    /// One delivery target.
    struct Export: Sendable {
        let name: String
        let exporter: TraceExporter
        /// The upstreams whose traces it takes.
        let routes: Set<UpstreamRoute>
    }

    private enum Destination: Sendable {
        case exporters([Export], HTTPClient, ExportExecutor)
        case file(TraceFileWriter)
    }

    private let destination: Destination
    private let builder: TraceBuilder
    /// Feedback on traces (`feedback_path` with MLflow export); nil when off.
    let feedback: FeedbackChannel?
    /// The session of each Responses API response seen (`chain:previous_response_id`); builder thread only.
    private var responseChain = ResponseSessionChain()
    /// Captures waiting to be built.
    let captures: CaptureQueue<CapturedExchange>
    /// Builds traces on idle event loops; nil when building needs state shared between traces
    /// (`chain:` session sources).
    let inPlace: InPlaceTraceBuilder?
    /// Storage of captured bodies (their arrays' capacity), from an exchange's first body byte until
    /// its trace is built.
    let captureBudget: CaptureBudget
    /// Set to stop the builder thread; it drains once more, then returns from `runBuilder`.
    private let stopping = NIOLockedValueBox(false)
    /// Wakes the builder thread when a capture (or a trace built in place) arrives.
    private let work = ThreadWakeSignal()
    /// Exchanges left untraced because the builder or the tracking server fell behind; logged at most every 10 s.
    private let overload = LogThrottle()
    /// Whether capture is paused because every tracking server is `export_backlog_limit` traces behind;
    /// builder thread only.
    private var backlogPause: BacklogPause
    private let backlogNotices = LogThrottle()
    /// Rotated trace files deleted to stay within `trace_file_keep`; logged at most every 10 s.
    private let rotationDeletions = LogThrottle()
    /// `captures.refusedCount` when last logged; builder thread only.
    private var refusalsLogged = 0
    private let logger: Logger
    /// Counts token usage of the traces built.
    private let metrics: TracegateMetrics

    /// Nil when traces go nowhere (capture off, or no exporter and no trace file). Token usage and
    /// delivery figures go to `metrics` from the start.
    init?(settings: TracegateSettings, metrics: TracegateMetrics, logger: Logger) throws {
        if settings.capture == .off {
            logger.notice("capture = off: no traces are made")
            return nil
        }
        let otel = settings.openTelemetryExport
        var feedback: FeedbackChannel?
        if settings.mlflowTrackingURI != nil || otel != nil {
            if settings.spoolDir == nil {
                logger.warning("no spool_dir: traces an exporter cannot deliver in time are dropped (counted)")
            }
            let executor = ExportExecutor()
            let http = HTTPClient(eventLoopGroupProvider: .shared(executor.group))
            var exports: [Export] = []
            if let trackingURI = settings.mlflowTrackingURI {
                // One exporter per experiment: the global one, and each route that names its own.
                for (name, experimentSettings, routes) in Self.experiments(settings) {
                    let spool = try settings.spoolDir.map {
                        try ExportSpool(directory: $0 + "/" + name, maxBytes: settings.spoolMaxBytes)
                    }
                    let exporter = Self.makeExporter(
                        trackingURI: trackingURI, settings: experimentSettings, http: http, logger: logger, spool: spool)
                    exports.append(Export(name: name, exporter: exporter, routes: routes))
                }
                logger.info("exporting traces to MLflow", metadata: ["tracking_uri": "\(trackingURI)"])
                if settings.feedbackPath != nil {
                    guard let spoolDir = settings.spoolDir else { throw SpoolError("feedback_path needs spool_dir: feedback is queued on disk") }
                    let exporters = exports.map(\.exporter)
                    feedback = try FeedbackChannel(
                        settings: settings, trackingURI: trackingURI, spoolDir: spoolDir, http: http,
                        experimentIDs: { exporters.compactMap(\.resolvedExperimentID) }, logger: logger)
                }
            }
            if let otel {
                let spool = try settings.spoolDir.map { try ExportSpool(directory: $0 + "/otlp", maxBytes: settings.spoolMaxBytes) }
                let exporter = Self.makeOpenTelemetryExporter(otel, settings: settings, http: http, logger: logger, spool: spool)
                exports.append(
                    Export(name: "otlp", exporter: exporter, routes: Set((0...settings.routes.count).map(UpstreamRoute.init(index:)))))
                logger.info("exporting traces over OTLP", metadata: ["endpoint": "\(otel.tracesEndpoint)"])
            }
            destination = .exporters(exports, http, executor)
        } else if let path = settings.traceFile {
            destination = .file(try TraceFileWriter(path: path, maxBytes: settings.traceFileMaxBytes, keep: settings.traceFileKeep))
            logger.notice("no MLFLOW_TRACKING_URI: traces are appended to \(path); send them with `tracegate push \(path)`")
        } else {
            logger.notice("no MLFLOW_TRACKING_URI and no trace_file: traces are not kept")
            return nil
        }
        self.feedback = feedback
        captures = CaptureQueue(capacity: settings.captureQueueSize, signal: work)
        captureBudget = CaptureBudget(limit: settings.captureMemoryLimit)
        backlogPause = BacklogPause(limit: settings.exportBacklogLimit)
        builder = TraceBuilder(
            staticTags: settings.traceTags.pairs, errorOn4xx: settings.traceErrorOn4xx, capturesBodies: settings.capture == .full,
            redaction: Redaction(settings: settings), namesChatByOperation: settings.traceNames == .operation,
            sources: Self.sources(settings), identity: IdentityResolver(settings: settings),
            routeTags: [[]] + settings.routes.map(\.traceTags.pairs))
        if builder.identity.followsResponseChains {
            inPlace = nil
        } else {
            var writesLines = false
            if case .file = destination { writesLines = true }
            inPlace = InPlaceTraceBuilder(
                builder: builder, writesLines: writesLines,
                built: CaptureQueue(capacity: settings.captureQueueSize, signal: work), budget: captureBudget)
        }
        self.logger = logger
        self.metrics = metrics
        reportDelivery(to: metrics)
    }

    /// What runs the pipeline, in start order (a `ServiceGroup` stops them in reverse): the HTTP client
    /// and export thread, the feedback delivery, each exporter, then the builder. So at shutdown the
    /// builder builds what is left first, the exporters then deliver or spool it, and their client
    /// goes last.
    func services(logger: Logger) -> [any Service] {
        var services: [any Service] = []
        if case .exporters(let exports, let http, let executor) = destination {
            services.append(ExportTransportService(http: http, executor: executor))
            if let feedback { services.append(FeedbackDeliveryService(delivery: feedback.delivery, executor: executor)) }
            services += exports.map { TraceExportService(export: $0, executor: executor, logger: logger) }
        }
        services.append(TraceBuilderService(pipeline: self, logger: logger))
        return services
    }

    /// The exporters, to tell them no more traces are coming once the builder has stopped.
    var exports: [Export] {
        if case .exporters(let exports, _, _) = destination { return exports }
        return []
    }

    /// Where traces come from, by route index: the default upstream's, then each route's.
    static func sources(_ settings: TracegateSettings) -> [TraceSource] {
        let type = settings.traceSourceType
        let fallback = TraceSource(name: settings.traceSourceName ?? settings.upstream.authority, type: type)
        return [fallback] + settings.routes.map { route in
            TraceSource(name: route.traceSourceName ?? settings.traceSourceName ?? route.name, type: type, route: route.name)
        }
    }

    /// The MLflow experiments traces go to: the global one (named `mlflow`), then one per route that
    /// names its own (`mlflow-route-NAME`), each with the routes it takes and settings naming it.
    private static func experiments(_ settings: TracegateSettings) -> [(String, TracegateSettings, Set<UpstreamRoute>)] {
        var global: Set<UpstreamRoute> = [.defaultUpstream]
        var own: [(String, TracegateSettings, Set<UpstreamRoute>)] = []
        for (index, route) in settings.routes.enumerated() {
            guard route.mlflowExperimentName != nil || route.mlflowExperimentID != nil else {
                global.insert(.configured(index))
                continue
            }
            var routeSettings = settings
            routeSettings.mlflowExperimentName = route.mlflowExperimentName
            routeSettings.mlflowExperimentID = route.mlflowExperimentID
            own.append(("mlflow-route-" + route.name, routeSettings, [.configured(index)]))
        }
        return [("mlflow", settings, global)] + own
    }

    /// The MLflow exporter for `settings`.
    /// Traces an exporter holds in memory per queue: with a spool its overflow goes to disk, not RSS.
    static func memoryBound(spooling: Bool) -> Int { spooling ? 250 : 1_000 }

    /// `memoryBound`: traces held in memory per queue before they are spooled (or dropped without a
    /// spool); `memoryBound(spooling:)` by default.
    static func makeExporter(
        trackingURI: String, settings: TracegateSettings, http: HTTPClient, logger: Logger, spool: ExportSpool? = nil,
        memoryBound: Int? = nil
    ) -> TraceExporter {
        let client = mlflowClient(trackingURI: trackingURI, settings: settings, http: http)
        let experiment: ExperimentSource
        if let id = settings.mlflowExperimentID {
            experiment = .id(id)
        } else if let name = settings.mlflowExperimentName {
            experiment = .resolve(name: name, using: { try await client.experimentID(named: $0) })
        } else {
            experiment = .id("0")  // MLflow's Default experiment, as its own client does
        }
        var configuration = ExporterConfiguration()
        configuration.maxBatchTraces = settings.exportBatchSize
        configuration.maxBatchDelay = settings.exportBatchDelay
        configuration.startTraceConcurrency = settings.exportConcurrency
        configuration.drainTimeout = settings.exportDrainTimeout
        configuration.maxQueuedTraces = memoryBound ?? Self.memoryBound(spooling: spool != nil)
        return TraceExporter(
            configuration: configuration, destination: .mlflow(client, experiment: experiment), logger: logger, spool: spool)
    }

    /// A client of the tracking server, authenticated as MLflow's own client would be.
    static func mlflowClient(
        trackingURI: String, settings: TracegateSettings, http: HTTPClient, timeout: TimeAmount = .seconds(30)
    ) -> MLflowClient {
        MLflowClient(
            trackingURI: trackingURI,
            auth: .resolve(
                username: settings.mlflowTrackingUsername, password: settings.mlflowTrackingPassword,
                token: settings.mlflowTrackingToken),
            http: http, timeout: timeout)
    }

    /// The OpenTelemetry exporter: the same batching, retries and spool, no trace-info calls, and
    /// spans linked to the caller's span when the request carried `traceparent`.
    static func makeOpenTelemetryExporter(
        _ otel: OpenTelemetryExport, settings: TracegateSettings, http: HTTPClient, logger: Logger, spool: ExportSpool?
    ) -> TraceExporter {
        let client = OTLPCollectorClient(
            tracesEndpoint: otel.tracesEndpoint, headers: otel.headers.map { ($0.name, $0.value) }, http: http)
        var configuration = ExporterConfiguration()
        configuration.maxBatchTraces = settings.exportBatchSize
        configuration.maxBatchDelay = settings.exportBatchDelay
        configuration.drainTimeout = settings.exportDrainTimeout
        configuration.linksParentSpans = true
        configuration.maxQueuedTraces = Self.memoryBound(spooling: spool != nil)
        configuration.serviceName = otel.serviceName
        configuration.resourceAttributes = otel.resourceAttributes
        return TraceExporter(configuration: configuration, destination: .spans(client), logger: logger, spool: spool)
    }

    /// Reports delivery figures (summed over the exporters; exchanges left uncaptured with a trace
    /// file too) to `metrics`.
    private func reportDelivery(to metrics: TracegateMetrics) {
        var exports: [Export] = []
        if case .exporters(let all, _, _) = destination { exports = all }
        let feedback = self.feedback?.delivery
        metrics.setDeliverySource { [weak self, exports] in
            var total = DeliverySnapshot()
            if let feedback {
                let stats = feedback.stats
                total.feedbackAccepted = stats.queued
                total.feedbackDelivered = stats.delivered
                total.feedbackRejected = stats.rejected
                total.feedbackPending = feedback.pending
            }
            total.dropped = self?.droppedBeforeExport ?? 0
            for export in exports {
                let exporter = export.exporter
                let stats = exporter.stats
                total.queued += exporter.queuedTraces
                total.exported += stats.exported
                total.retries += stats.retries
                total.dropped += stats.dropped
                total.rejected += stats.rejected
                total.traceInfoFailures += stats.startTraceFailures + stats.traceInfoDropped
                total.spooled += stats.spooled
                total.replayed += stats.replayed
                total.spoolTraces += exporter.spooledTraces
                total.spoolBytes += exporter.spooledBytes
            }
            return total
        }
    }

    /// The builder thread's work (`TraceBuilderService` runs it): lowers its own priority, then, until
    /// `stopBuilding`, waits for captures, gathers for 5 ms and drains. While capture is paused for a
    /// backlog nothing arrives, so it looks every 20 ms whether the tracking server has caught up.
    ///
    /// It never trims the allocator's heaps (`malloc_trim` takes every arena's lock in turn, which an
    /// event loop allocating at that moment would wait for): what building frees is reused by the
    /// next traces.
    func runBuilder() {
        BackgroundThread.become("tg-builder")
        while !isStopping {
            work.wait(timeout: backlogPause.isPaused ? .milliseconds(20) : nil) {
                isStopping || captures.count > 0 || (inPlace?.built.count ?? 0) > 0
            }
            if isStopping { break }
            usleep(5_000)
            drain()
        }
        drain()
    }

    private var isStopping: Bool { stopping.withLockedValue { $0 } }

    /// Asks the builder thread to build what is waiting and return.
    func stopBuilding() {
        stopping.withLockedValue { $0 = true }
        work.wake()
    }

    /// Body bytes of the captures built together, at most (a group holds at least one capture).
    static let groupBodyBytes = 1 << 20

    /// Builds and hands on everything waiting; runs on the builder thread, in bursts (`CPUBurst`).
    private func drain() {
        pauseWhileBehind()
        // What the event loops queued goes back to them once built (`LoopReturns`): the builder frees
        // nothing a loop allocated.
        let captures = self.captures.takeBatch()
        let refused = self.captures.refusedCount
        if refused > refusalsLogged, let report = overload.record(refused - refusalsLogged) {
            logger.warning("trace building or delivery cannot keep up: \(report) exchanges forwarded untraced so far")
        }
        refusalsLogged = refused
        var burst = CPUBurst()
        if let inPlace {
            let built = inPlace.built.takeBatch()
            hand(built.elements, burst: &burst)
            built.sendHome()
        }
        build(captures.elements, burst: &burst)
        captures.sendHome()
    }

    /// Builds `captures` a hundred at a time, and at most `groupBodyBytes` of bodies: built traces are
    /// several times the size of their captures, and handing them on in small groups keeps the peak
    /// (and so the RSS glibc keeps) small.
    private func build(_ captures: [CapturedExchange], burst: inout CPUBurst) {
        var start = captures.startIndex
        while start < captures.endIndex {
            var end = start
            var bodyBytes = 0
            while end < captures.endIndex && end - start < 100 && (end == start || bodyBytes < Self.groupBodyBytes) {
                bodyBytes += captures[end].bodyStorage
                end += 1
            }
            build(captures[start..<end], burst: &burst)
            captureBudget.release(bodyBytes)
            start = end
        }
    }

    /// Pauses capture while every tracking server is behind (`BacklogPause`): a working server that
    /// cannot keep up then gets the traces it can store, fresh, instead of a backlog growing until the
    /// spool drops the oldest.
    private func pauseWhileBehind() {
        guard case .exporters(let exports, _, _) = destination,
            let paused = backlogPause.observe(backlogs: exports.map(\.exporter.spanBacklog))
        else { return }
        captures.setPaused(paused)
        if paused, let pauses = backlogNotices.record() {
            logger.warning(
                "the tracking server is \(backlogPause.limit) traces behind: new exchanges are forwarded untraced until it catches up",
                metadata: ["pauses_so_far": "\(pauses)"])
        }
    }

    /// Builds `captures` and hands the traces to the exporters (one hand-over each) or the trace file
    /// (one write), pausing after each trace once a burst is spent.
    private func build(_ captures: ArraySlice<CapturedExchange>, burst: inout CPUBurst) {
        var built: [(record: TraceRecord, route: UpstreamRoute)] = []
        var lines: [UInt8] = []
        for captured in captures {
            defer { burst.pauseIfDue() }
            if !builder.traces(captured) {
                followResponseChain(captured)
                continue
            }
            if case .exporters(let exports, _, _) = destination,
                exports.allSatisfy({ !$0.routes.contains(UpstreamRoute(index: captured.routeIndex)) || $0.exporter.isFull })
            {
                // No exporter can take it (full memory, no spool): don't spend CPU on building it.
                for export in exports where export.routes.contains(UpstreamRoute(index: captured.routeIndex)) { export.exporter.countDropped() }
                followResponseChain(captured)
                continue
            }
            let record = builder.record(for: captured, chain: &responseChain)
            if let tokens = record.reportedTokens {
                metrics.countTokens(model: tokens.model, input: tokens.input, output: tokens.output)
            }
            switch destination {
            case .exporters:
                feedback?.remember(record)
                built.append((record, UpstreamRoute(index: captured.routeIndex)))
            case .file:
                TraceRecordJSON.appendLine(record, to: &lines)
            }
        }
        deliver(records: built, lines: lines)
    }

    /// Hands on the traces event loops built (`InPlaceTraceBuilder`), a hundred at a time.
    private func hand(_ traces: [BuiltTrace], burst: inout CPUBurst) {
        var start = traces.startIndex
        while start < traces.endIndex {
            let end = min(start + 100, traces.endIndex)
            var records: [(record: TraceRecord, route: UpstreamRoute)] = []
            var lines: [UInt8] = []
            lines.reserveCapacity(traces[start..<end].reduce(0) { $0 + $1.output.lineBytes })  // one allocation, not one per doubling
            for trace in traces[start..<end] {
                if let tokens = trace.tokens {
                    metrics.countTokens(model: tokens.model, input: tokens.input, output: tokens.output)
                }
                switch trace.output {
                case .record(let record):
                    feedback?.remember(record)
                    records.append((record, trace.route))
                case .line(let line):
                    lines += line
                }
            }
            deliver(records: records, lines: lines)
            burst.pauseIfDue()
            start = end
        }
    }

    /// Gives built traces to their exporters (one hand-over each), or trace-file lines to the file (one write).
    private func deliver(records built: [(record: TraceRecord, route: UpstreamRoute)], lines: [UInt8]) {
        switch destination {
        case .exporters(let exports, _, _):
            // A spooling exporter writes the whole group with one write.
            guard !built.isEmpty else { return }
            for export in exports {
                let records = built.filter { export.routes.contains($0.route) }.map(\.record)
                if !records.isEmpty { export.exporter.submit(contentsOf: records) }
            }
        case .file(let writer):
            guard !lines.isEmpty else { return }
            do {
                let deleted = try writer.write(lines: lines)
                if deleted > 0, let report = rotationDeletions.record() {
                    logger.notice(
                        "trace file rotated: its oldest rotated file (\(deleted) bytes) was deleted to stay within trace_file_keep = \(writer.keep); push rotated files before they age out",
                        metadata: ["deletions_so_far": "\(report)"])
                }
            } catch {
                logger.error("cannot write the trace file: \(error)")
            }
        }
    }

    /// A Responses API turn that is not traced still links its conversation's chain, so the turns
    /// after it keep their session (`chain:previous_response_id`).
    private func followResponseChain(_ captured: CapturedExchange) {
        guard builder.identity.followsResponseChains, captured.target.prefix(while: { $0 != "?" }).hasSuffix("/responses") else { return }
        _ = builder.record(for: captured, chain: &responseChain)
    }

    /// Exchanges not captured (the builder or the tracking server behind), or built in place and not
    /// taken (the queue of built traces full).
    var droppedBeforeExport: Int { captures.refusedCount + (inPlace?.built.refusedCount ?? 0) }
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

extension IdentityResolver {
    init(settings: TracegateSettings) {
        self.init(
            userSources: settings.userSources, sessionSources: settings.sessionSources,
            pseudonymiser: settings.identityHash == .hmacSHA256 ? settings.identityHashKey.map(HMACSHA256.init(key:)) : nil)
    }
}

extension TraceCaptureSettings {
    init(settings: TracegateSettings) {
        self.init()
        let identity = IdentityResolver(settings: settings)
        userHeadSources = identity.headSources.user
        sessionHeadSources = identity.headSources.session
        requestIDHeader = settings.requestIDHeader
        traceIDResponseHeader = settings.traceIDHeader
        maxCapturedBodyBytes = settings.captureMaxBodyBytes
        let redacted = Set(settings.redactHeaders.map { $0.lowercased() })
        headerTags = settings.tagHeaders.pairs.filter { !redacted.contains($0.0.lowercased()) }.map { (header: $0.0, tag: $0.1) }
        upstreams = [settings.upstream.description] + settings.routes.map(\.upstream.description)
        sampleRatio = settings.sampleRatio
        forceTraceHeader = settings.forceTraceHeader
        propagatesTraceContext = settings.propagateTraceContext
        untracedPath = settings.feedbackPath
    }
}
