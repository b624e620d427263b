import Logging
import NIOConcurrencyHelpers
import TracegateTrace

/// Where batches of traces go; `MLflowClient` is the real one, tests use fakes.
public protocol TraceSink: Sendable {
    /// Posts an OTLP/JSON export request; throws `MLflowError`.
    func postTraces(_ otlpJSON: [UInt8], experimentID: String) async throws
    /// Posts one StartTraceV3 body; returns the echoed trace info.
    func startTrace(_ body: [UInt8]) async throws -> [UInt8]
}

extension MLflowClient: TraceSink {}

/// How traces are batched and delivered.
public struct ExporterConfiguration: Sendable {
    /// The experiment receiving the traces: its id, or a resolver run (and retried) before the first delivery.
    public var experiment: ExperimentSource
    /// A batch is sent when it holds this many traces…
    public var maxBatchTraces = 100
    /// …or when its oldest trace has waited this long.
    public var maxBatchDelay: Duration = .seconds(1)
    /// Traces held in memory (waiting for spans, and separately for trace info); beyond it the
    /// oldest are dropped and counted.
    public var maxQueuedTraces = 1_000
    /// StartTraceV3 calls in flight at once.
    public var startTraceConcurrency = 4
    public var serviceName = "tracegate"
    public var resourceAttributes: [String: String] = [:]
    public var initialBackoff: Duration = .milliseconds(200)
    public var maxBackoff: Duration = .seconds(30)

    public init(experiment: ExperimentSource) { self.experiment = experiment }
}

/// Where the experiment id comes from.
public enum ExperimentSource: Sendable {
    case id(String)
    /// Looked up (and created) by name, e.g. with `MLflowClient.experimentID(named:)`.
    case resolve(name: String, using: @Sendable (String) async throws -> String)
}

/// Counters of what the exporter did.
public struct ExporterStats: Sendable, Equatable {
    public var exported = 0
    public var retries = 0
    public var dropped = 0
    /// Traces the server refused as invalid, set aside after bisecting their batch.
    public var rejected = 0
    public var startTraceFailures = 0
    /// Stored traces whose StartTraceV3 was given up because its queue overflowed.
    public var traceInfoDropped = 0
}

/// Batches finished traces and delivers them to MLflow: OTLP `/v1/traces` for the spans, then
/// StartTraceV3 per trace for `client_request_id` and metadata, with bounded concurrency.
/// `submit` never blocks (it is called on event loops); delivery runs in `run()`.
public final class TraceExporter: Sendable {
    private struct State {
        var queue: [TraceRecord] = []
        var oldestQueuedAt: ContinuousClock.Instant?
        var stopping = false
        var experimentID: String?
        /// Stored traces still waiting for StartTraceV3 (client_request_id, metadata).
        var infoQueue: [TraceRecord] = []
        var spansDone = false
        var stats = ExporterStats()
    }

    private let configuration: ExporterConfiguration
    private let sink: TraceSink
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    public init(configuration: ExporterConfiguration, sink: TraceSink, logger: Logger) {
        self.configuration = configuration
        self.sink = sink
        self.logger = logger
    }

    public var stats: ExporterStats { state.withLockedValue { $0.stats } }
    public var queuedTraces: Int { state.withLockedValue { $0.queue.count } }

    /// True when the queue is full: a caller can skip building a trace that would only be dropped.
    public var isFull: Bool { state.withLockedValue { $0.queue.count >= configuration.maxQueuedTraces } }

    /// Counts a trace the caller dropped because the queue was full.
    public func countDropped() { state.withLockedValue { $0.stats.dropped += 1 } }

    /// Queues a finished trace. Never blocks; when the queue is full the oldest trace is dropped.
    public func submit(_ record: TraceRecord) {
        state.withLockedValue { state in
            if state.queue.isEmpty { state.oldestQueuedAt = .now }
            state.queue.append(record)
            let excess = state.queue.count - configuration.maxQueuedTraces
            if excess > 0 {
                state.queue.removeFirst(excess)
                state.stats.dropped += excess
            }
        }
    }

    /// Asks `run()` to deliver what is queued and return.
    public func shutdown() {
        state.withLockedValue { $0.stopping = true }
    }

    /// Delivers batches until `shutdown()`, then delivers what is left once more and returns.
    public func run() async {
        guard await resolveExperiment() else { return }
        // Spans and trace info travel separately: StartTraceV3 (one call per trace) is several times
        // slower than batched OTLP, so it must never hold back the spans.
        async let info: Void = runTraceInfo()
        while true {
            let (batch, stopping) = nextBatch()
            if !batch.isEmpty {
                let stored = await postSpans(batch)
                state.withLockedValue { state in
                    state.stats.exported += stored.count
                    state.infoQueue.append(contentsOf: stored)
                    let excess = state.infoQueue.count - configuration.maxQueuedTraces
                    if excess > 0 {
                        state.infoQueue.removeFirst(excess)
                        state.stats.traceInfoDropped += excess
                    }
                }
                continue
            }
            if stopping { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        state.withLockedValue { $0.spansDone = true }
        await info
    }

    /// Sends StartTraceV3 for stored traces, `startTraceConcurrency` at a time, until the spans are done
    /// and nothing is left.
    private func runTraceInfo() async {
        while true {
            let (records, finished): ([TraceRecord], Bool) = state.withLockedValue { state in
                let records = state.infoQueue
                state.infoQueue.removeAll()
                return (records, state.spansDone)
            }
            if !records.isEmpty {
                await startTraces(records)
            } else if finished {
                return
            } else {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// The experiment id, resolved once; retried while the server is unreachable. False when it
    /// cannot be had (a deleted experiment, or shutdown before the server answered).
    private func resolveExperiment() async -> Bool {
        switch configuration.experiment {
        case .id(let id):
            state.withLockedValue { $0.experimentID = id }
            return true
        case .resolve(let name, let resolve):
            var backoff = configuration.initialBackoff
            while true {
                do {
                    let id = try await resolve(name)
                    state.withLockedValue { $0.experimentID = id }
                    logger.info("exporting traces", metadata: ["experiment": "\(name)", "experiment_id": "\(id)"])
                    return true
                } catch let error as MLflowError where error.isRetryable {
                    if state.withLockedValue({ $0.stopping }) {
                        let lost = state.withLockedValue { state in
                            defer { state.queue.removeAll() }
                            state.stats.dropped += state.queue.count
                            return state.queue.count
                        }
                        logger.error("tracking server unreachable at shutdown; \(lost) traces not delivered: \(error)")
                        return false
                    }
                    logger.warning("cannot reach the tracking server yet, retrying", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, configuration.maxBackoff)
                } catch {
                    logger.critical("traces cannot be exported: \(error)")
                    return false
                }
            }
        }
    }

    private var experimentID: String { state.withLockedValue { $0.experimentID ?? "0" } }

    /// A batch when one is due (full, old enough, or stopping); empty otherwise.
    private func nextBatch() -> ([TraceRecord], Bool) {
        state.withLockedValue { state in
            let due =
                state.stopping || state.queue.count >= configuration.maxBatchTraces
                || (state.oldestQueuedAt.map { ContinuousClock.now - $0 >= configuration.maxBatchDelay } ?? false)
            guard due, !state.queue.isEmpty else { return ([], state.stopping) }
            let count = min(configuration.maxBatchTraces, state.queue.count)
            let batch = Array(state.queue.prefix(count))
            state.queue.removeFirst(count)
            state.oldestQueuedAt = state.queue.isEmpty ? nil : .now
            return (batch, state.stopping)
        }
    }

    /// Posts `records` as one OTLP batch, retrying while the server is unavailable; a batch the server
    /// rejects is split in halves until the invalid traces are found and set aside. Returns what was stored.
    private func postSpans(_ records: [TraceRecord]) async -> [TraceRecord] {
        let body = OTLPJSON.exportRequest(
            records, serviceName: configuration.serviceName, resourceAttributes: configuration.resourceAttributes)
        var backoff = configuration.initialBackoff
        while true {
            do {
                try await sink.postTraces(body, experimentID: experimentID)
                return records
            } catch let error as MLflowError where error.isRetryable {
                state.withLockedValue { $0.stats.retries += 1 }
                logger.warning("trace export failed, retrying", metadata: ["error": "\(error)", "traces": "\(records.count)"])
                if state.withLockedValue({ $0.stopping }) {
                    state.withLockedValue { $0.stats.dropped += records.count }
                    logger.error("tracking server unavailable at shutdown: \(records.count) traces not delivered: \(error)")
                    return []
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, configuration.maxBackoff)
            } catch {
                guard records.count > 1 else {
                    state.withLockedValue { $0.stats.rejected += 1 }
                    logger.error(
                        "tracking server rejected a trace; set aside",
                        metadata: ["trace_id": "\(records[0].traceID.mlflowID)", "error": "\(error)"])
                    return []
                }
                let half = records.count / 2
                let first = await postSpans(Array(records[..<half]))
                let second = await postSpans(Array(records[half...]))
                return first + second
            }
        }
    }

    /// StartTraceV3 for each stored trace, `startTraceConcurrency` at a time, a few tries each.
    private func startTraces(_ records: [TraceRecord]) async {
        await withTaskGroup(of: Void.self) { group in
            var next = records.makeIterator()
            for _ in 0..<max(1, configuration.startTraceConcurrency) {
                guard let record = next.next() else { break }
                group.addTask { await self.startTrace(record) }
            }
            while await group.next() != nil {
                if let record = next.next() { group.addTask { await self.startTrace(record) } }
            }
        }
    }

    private func startTrace(_ record: TraceRecord) async {
        let body = StartTraceV3.body(record, experimentID: experimentID)
        var backoff = configuration.initialBackoff
        for attempt in 1...4 {
            do {
                let echoed = try await sink.startTrace(body)
                if StartTraceV3.responseConfirms(echoed, record: record) { return }
                throw MLflowError.unexpectedResponse("StartTraceV3 echo does not match what was sent")
            } catch let error as MLflowError where error.isRetryable && attempt < 4 {
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, configuration.maxBackoff)
            } catch {
                state.withLockedValue { $0.stats.startTraceFailures += 1 }
                logger.warning(
                    "could not set trace info (client_request_id, metadata)",
                    metadata: ["trace_id": "\(record.traceID.mlflowID)", "error": "\(error)"])
                return
            }
        }
    }
}
