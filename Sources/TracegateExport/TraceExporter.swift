import Logging
import NIOConcurrencyHelpers
import TracegateTrace

extension MLflowClient: TraceSink {}

/// Batches finished traces and delivers them: OTLP `/v1/traces` for the spans, then StartTraceV3
/// per trace for `client_request_id` and metadata, with bounded concurrency.
///
/// With a spool, nothing is lost to a tracking-server outage. Spans go out in two modes. *Direct*:
/// traces wait in memory and go out in batches. *Spooling*: while the spool's `spans/` queue holds
/// traces (the server failed, memory filled up, or an earlier run left some), new traces go to disk
/// behind them, and batches are read back oldest first once the server answers again; when that
/// queue is empty the exporter is direct again. Trace info, one slow call per trace, has its own
/// memory queue that overflows into `info/`, so it never holds back the spans. At shutdown delivery
/// goes on for at most `drainTimeout` (less when the server is down); what is left is spooled.
///
/// `submit` never waits on the network (it is called by the trace builder); delivery runs in `run()`.
public final class TraceExporter: Sendable {
    private struct State {
        var queue: [TraceRecord] = []
        var oldestQueuedAt: ContinuousClock.Instant?
        var stopping = false
        /// Past this instant, delivery stops and what is left is spooled.
        var drainDeadline: ContinuousClock.Instant?
        var experimentID: String?
        /// Stored traces still waiting for StartTraceV3 (client_request_id, metadata).
        var infoQueue: [TraceRecord] = []
        var spansDone = false
        /// The server is in trouble: no delivery before this instant.
        var retryAt: ContinuousClock.Instant?
        var backoff: Duration = .zero
        var stats = ExporterStats()

        /// Waiting out a backoff after server trouble.
        var isResting: Bool { retryAt.map { ContinuousClock.now < $0 } ?? false }

        mutating func serverAnswered(initialBackoff: Duration) {
            retryAt = nil
            backoff = initialBackoff
        }
    }

    private let configuration: ExporterConfiguration
    private let sink: TraceSink
    private let spool: ExportSpool?
    private let logger: Logger
    private let state = NIOLockedValueBox(State())
    /// Spool write failures (a full disk fails every write): logged at most every 10 s.
    private let spoolFailures = LogThrottle()

    public init(configuration: ExporterConfiguration, sink: TraceSink, logger: Logger, spool: ExportSpool? = nil) {
        self.configuration = configuration
        self.sink = sink
        self.spool = spool
        self.logger = logger
        state.withLockedValue { $0.backoff = configuration.initialBackoff }
        if let spool, !spool.spans.isEmpty || !spool.traceInfo.isEmpty {
            logger.notice(
                "the spool holds traces from an earlier run; replaying them first",
                metadata: ["spans_owed": "\(spool.spans.recordCount)", "trace_info_owed": "\(spool.traceInfo.recordCount)"])
        }
    }

    public var stats: ExporterStats { state.withLockedValue { $0.stats } }
    /// The experiment traces go to, once known (a name is resolved before the first delivery).
    public var resolvedExperimentID: String? {
        if case .id(let id) = configuration.experiment { return id }
        return state.withLockedValue { $0.experimentID }
    }
    public var queuedTraces: Int { state.withLockedValue { $0.queue.count + $0.infoQueue.count } }
    public var spooledTraces: Int { (spool?.spans.recordCount ?? 0) + (spool?.traceInfo.recordCount ?? 0) }
    public var spooledBytes: Int { (spool?.spans.byteCount ?? 0) + (spool?.traceInfo.byteCount ?? 0) }

    /// Traces still owing their spans (memory queue and spool) while the server answers: how far
    /// behind a working tracking server is. Nil while it does not answer (an outage: then every trace
    /// is kept, up to the spool's bound).
    public var spanBacklog: Int? {
        let (queued, answering) = state.withLockedValue { ($0.queue.count, $0.retryAt == nil) }
        guard answering else { return nil }
        return queued + (spool?.spans.recordCount ?? 0)
    }

    /// True when a new trace could only be dropped: a caller can skip building it.
    public var isFull: Bool {
        spool == nil && state.withLockedValue { $0.queue.count >= configuration.maxQueuedTraces }
    }

    /// Counts a trace the caller dropped because the queue was full.
    public func countDropped() { state.withLockedValue { $0.stats.dropped += 1 } }

    /// Queues a finished trace. Never waits on the network; past the memory bound the oldest traces go
    /// to the spool (or, without one, are dropped and counted).
    public func submit(_ record: TraceRecord) { submit(contentsOf: [record]) }

    /// Queues finished traces, in order. While the spool holds traces, new ones are written behind them
    /// at once, on the caller's thread (the trace builder's, whose priority is low), so the exporter
    /// itself only reads the spool back.
    public func submit(contentsOf records: [TraceRecord]) {
        if let spans = spool?.spans, !spans.isEmpty {
            let waiting = state.withLockedValue { state -> [TraceRecord] in
                defer { state.queue.removeAll() }
                return state.queue
            }
            spill(waiting + records, to: spans)
            return
        }
        let overflow: [TraceRecord] = state.withLockedValue { state in
            if state.queue.isEmpty { state.oldestQueuedAt = .now }
            state.queue.append(contentsOf: records)
            let excess = state.queue.count - configuration.maxQueuedTraces
            guard excess > 0 else { return [] }
            defer { state.queue.removeFirst(excess) }
            return Array(state.queue.prefix(excess))
        }
        spill(overflow, to: spool?.spans)
    }

    /// Asks `run()` to deliver what it can within `drainTimeout`, spool the rest, and return.
    public func shutdown() {
        state.withLockedValue { state in
            state.stopping = true
            state.drainDeadline = .now + configuration.drainTimeout
        }
    }

    /// Delivers until `shutdown()`; returns once every trace is delivered, spooled or counted as dropped.
    public func run() async {
        if await resolveExperiment() {
            async let info: Void = runTraceInfo()
            await runSpans()
            state.withLockedValue { $0.spansDone = true }
            await info
        }
        // Whatever is still in memory was not delivered in time: keep it for the next run.
        let (spans, infos) = state.withLockedValue { state -> ([TraceRecord], [TraceRecord]) in
            defer {
                state.queue.removeAll()
                state.infoQueue.removeAll()
            }
            return (state.queue, state.infoQueue)
        }
        if spool == nil && !infos.isEmpty { state.withLockedValue { $0.stats.traceInfoDropped += infos.count } }
        spill(spans, to: spool?.spans)
        spill(infos, to: spool?.traceInfo, countingDrops: false)
        spool?.spans.sync()
        spool?.traceInfo.sync()
    }

    // MARK: - Spans

    private enum Step { case deliverSpool, deliverBatch([TraceRecord]), wait(Duration), finish }

    private func runSpans() async {
        while true {
            switch nextStep() {
            case .finish:
                return
            case .wait(let duration):
                try? await Task.sleep(for: duration)
            case .deliverBatch(let batch):
                switch await postSpans(batch) {
                case .stored(let stored):
                    recordSuccess(stored, replayed: false)
                case .retryLater:
                    if let spool {
                        // Order is kept: the failed batch goes first, then what waited behind it.
                        let waiting = state.withLockedValue { state -> [TraceRecord] in
                            defer { state.queue.removeAll() }
                            return state.queue
                        }
                        spill(batch + waiting, to: spool.spans)
                    } else {
                        requeue(batch)
                    }
                }
            case .deliverSpool:
                await deliverFromSpool()
            }
        }
    }

    /// What the spans loop does next, decided under the lock.
    private func nextStep() -> Step {
        let spooling = !(spool?.spans.isEmpty ?? true)
        let (step, toSpool): (Step, [TraceRecord]) = state.withLockedValue { state in
            let now = ContinuousClock.now
            let pastDeadline = state.drainDeadline.map { now >= $0 } ?? false
            if state.stopping && (pastDeadline || (spool != nil && (spooling || state.retryAt != nil))) {
                return (.finish, [])  // what is left is spooled by run()
            }
            if spooling {
                // Newer traces queue behind the spooled ones.
                let moved = state.queue
                state.queue.removeAll()
                state.oldestQueuedAt = nil
                if let retryAt = state.retryAt, now < retryAt { return (.wait(min(.milliseconds(50), retryAt - now)), moved) }
                return (.deliverSpool, moved)
            }
            if let retryAt = state.retryAt, now < retryAt { return (.wait(min(.milliseconds(50), retryAt - now)), []) }
            let due =
                state.stopping || state.queue.count >= configuration.maxBatchTraces
                || (state.oldestQueuedAt.map { now - $0 >= configuration.maxBatchDelay } ?? false)
            guard due, !state.queue.isEmpty else { return (state.stopping ? .finish : .wait(.milliseconds(20)), []) }
            let count = min(configuration.maxBatchTraces, state.queue.count)
            let batch = Array(state.queue.prefix(count))
            state.queue.removeFirst(count)
            state.oldestQueuedAt = state.queue.isEmpty ? nil : now
            return (.deliverBatch(batch), [])
        }
        spill(toSpool, to: spool?.spans)
        return step
    }

    /// Sends the oldest spooled batch and acknowledges it once stored (or set aside).
    private func deliverFromSpool() async {
        guard let spans = spool?.spans, let batch = spans.peek(max: configuration.maxBatchTraces) else { return }
        if batch.unreadableLines > 0 {
            logger.error("the spool had \(batch.unreadableLines) unreadable lines (a torn write?); skipped")
        }
        var stored: [TraceRecord] = []
        if !batch.records.isEmpty {
            guard case .stored(let records) = await postSpans(batch.records) else { return }
            stored = records
        }
        spans.acknowledge(batch)
        recordSuccess(stored, replayed: true)
    }

    /// After a delivery: the server is well again, and the stored traces are owed their trace info.
    private func recordSuccess(_ stored: [TraceRecord], replayed: Bool) {
        let overflow: [TraceRecord] = state.withLockedValue { state in
            state.serverAnswered(initialBackoff: configuration.initialBackoff)
            state.stats.exported += stored.count
            if replayed { state.stats.replayed += stored.count }
            guard configuration.sendsTraceInfo else { return [] }
            state.infoQueue.append(contentsOf: stored)
            let excess = state.infoQueue.count - configuration.maxQueuedTraces
            guard excess > 0 else { return [] }
            defer { state.infoQueue.removeFirst(excess) }
            if spool == nil { state.stats.traceInfoDropped += excess }
            return Array(state.infoQueue.prefix(excess))
        }
        spill(overflow, to: spool?.traceInfo, countingDrops: false)
    }

    private enum Delivery { case stored([TraceRecord]), retryLater }

    /// Posts `records` as one OTLP batch. A batch the server rejects is split in halves until the
    /// invalid traces are found and set aside. A server in trouble (5xx, 429, unreachable) sets the
    /// next try after a growing backoff.
    private func postSpans(_ records: [TraceRecord]) async -> Delivery {
        let body = OTLPJSON.exportRequest(
            records, serviceName: configuration.serviceName, resourceAttributes: configuration.resourceAttributes,
            linksParents: configuration.linksParentSpans)
        do {
            try await sink.postTraces(body, experimentID: experimentID)
            return .stored(records)
        } catch let error as MLflowError where error.isRetryable {
            serverTrouble(error, traces: records.count)
            return .retryLater
        } catch {
            guard records.count > 1 else {
                setAside(records[0], reason: "\(error)")
                return .stored([])
            }
            let half = records.count / 2
            guard case .stored(let first) = await postSpans(Array(records[..<half])) else { return .retryLater }
            // The first half is stored; if the server fails now, resending it with the rest is harmless (upserts).
            guard case .stored(let second) = await postSpans(Array(records[half...])) else { return .retryLater }
            return .stored(first + second)
        }
    }

    private func serverTrouble(_ error: MLflowError, traces: Int) {
        let delay = state.withLockedValue { state -> Duration in
            state.stats.retries += 1
            let delay = state.backoff
            state.retryAt = .now + delay
            state.backoff = min(state.backoff * 2, configuration.maxBackoff)
            return delay
        }
        logger.warning(
            "trace export failed; retrying later", metadata: ["error": "\(error)", "traces": "\(traces)", "retry_in": "\(delay)"])
    }

    /// A trace the server refuses as invalid: kept in the dead-letter file with the reason, never retried.
    private func setAside(_ record: TraceRecord, reason: String) {
        state.withLockedValue { $0.stats.rejected += 1 }
        logger.error("tracking server rejected a trace; set aside", metadata: ["trace_id": "\(record.traceID.mlflowID)", "error": "\(reason)"])
        do {
            try spool?.deadLetters.append(record, reason: reason)
        } catch {
            logger.error("cannot write the dead-letter file: \(error)")
        }
    }

    /// Without a spool, a batch the server could not take goes back to the front of the memory queue,
    /// which loses its oldest traces beyond the bound.
    private func requeue(_ batch: [TraceRecord]) {
        state.withLockedValue { state in
            state.queue.insert(contentsOf: batch, at: 0)
            let excess = state.queue.count - configuration.maxQueuedTraces
            if excess > 0 {
                state.queue.removeFirst(excess)
                state.stats.dropped += excess
            }
            if state.oldestQueuedAt == nil { state.oldestQueuedAt = .now }
        }
    }

    /// Appends traces to one of the spool's queues. Without a spool, or when writing fails, they are
    /// lost: counted as dropped unless `countingDrops` is false (trace info, counted on its own).
    private func spill(_ traces: [TraceRecord], to queue: TraceSpool?, countingDrops: Bool = true) {
        guard !traces.isEmpty else { return }
        guard let queue else {
            if countingDrops { state.withLockedValue { $0.stats.dropped += traces.count } }
            return
        }
        do {
            let lost = try queue.append(traces)
            state.withLockedValue { state in
                state.stats.spooled += traces.count
                if countingDrops { state.stats.dropped += lost } else { state.stats.traceInfoDropped += lost }
            }
            if lost > 0 {
                logger.error("the spool queue \(queue.configuration.directory) is full (\(queue.configuration.maxBytes) bytes): dropped its \(lost) oldest traces")
            }
        } catch {
            state.withLockedValue { state in
                if countingDrops { state.stats.dropped += traces.count } else { state.stats.traceInfoDropped += traces.count }
            }
            if let total = spoolFailures.record(traces.count) {
                logger.error("cannot write to the spool; \(total) traces lost so far: \(error)")
            }
        }
    }

    // MARK: - Trace info

    /// `startTraceConcurrency` workers send StartTraceV3 for stored traces until the spans are done and
    /// nothing is left, or the drain deadline passes.
    private func runTraceInfo() async {
        guard configuration.sendsTraceInfo else { return }
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<max(1, configuration.startTraceConcurrency) {
                group.addTask { await self.traceInfoWorker() }
            }
        }
    }

    private func traceInfoWorker() async {
        while true {
            let next: TraceRecord?? = state.withLockedValue { state in
                if let deadline = state.drainDeadline, ContinuousClock.now >= deadline { return .some(nil) }
                if state.stopping && state.retryAt != nil && spool != nil { return .some(nil) }  // server down: spool it
                if state.isResting { return .none }  // let the server recover
                // Spans first: they make a trace visible; while a backlog of them waits to be sent, trace
                // info (one slow call per trace on the same server) waits too.
                if !state.spansDone && (state.queue.count >= configuration.maxBatchTraces || !(spool?.spans.isEmpty ?? true)) {
                    return .none
                }
                if !state.infoQueue.isEmpty { return .some(state.infoQueue.removeFirst()) }
                return state.spansDone ? .some(nil) : .none
            }
            switch next {
            case .some(.some(let record)): await startTrace(record)
            case .some(.none): return
            case .none: if !refillTraceInfo() { try? await Task.sleep(for: .milliseconds(20)) }
            }
        }
    }

    /// Moves a batch of spooled trace-info work into memory when the memory queue is empty. The batch
    /// is acknowledged at once: a crash before it is sent loses only trace info, never spans.
    private func refillTraceInfo() -> Bool {
        guard let info = spool?.traceInfo, state.withLockedValue({ $0.infoQueue.isEmpty && !$0.isResting }),
            let batch = info.peek(max: configuration.maxBatchTraces)
        else { return false }
        info.acknowledge(batch)
        state.withLockedValue { $0.infoQueue.append(contentsOf: batch.records) }
        return true
    }

    private func startTrace(_ record: TraceRecord) async {
        let body = StartTraceV3.body(record, experimentID: experimentID)
        var backoff = configuration.initialBackoff
        for attempt in 1...4 {
            do {
                let echoed = try await sink.startTrace(body)
                if StartTraceV3.responseConfirms(echoed, record: record) {
                    state.withLockedValue { $0.serverAnswered(initialBackoff: configuration.initialBackoff) }
                    return
                }
                throw MLflowError.unexpectedResponse("StartTraceV3 echo does not match what was sent")
            } catch let error as MLflowError where error.isRetryable {
                if attempt < 4 && !state.withLockedValue({ $0.stopping }) {
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, configuration.maxBackoff)
                    continue
                }
                // Still failing: keep it for later (the spool), or give up without one.
                if let spool {
                    serverTrouble(error, traces: 1)
                    spill([record], to: spool.traceInfo, countingDrops: false)
                } else {
                    countTraceInfoFailure(record, error)
                }
                return
            } catch let error as MLflowError where error.isRejection {
                state.withLockedValue { $0.stats.startTraceFailures += 1 }
                setAside(record, reason: "StartTraceV3: \(error)")
                return
            } catch {
                countTraceInfoFailure(record, error)
                return
            }
        }
    }

    private func countTraceInfoFailure(_ record: TraceRecord, _ error: any Error) {
        state.withLockedValue { $0.stats.startTraceFailures += 1 }
        logger.warning(
            "could not set trace info (client_request_id, metadata)",
            metadata: ["trace_id": "\(record.traceID.mlflowID)", "error": "\(error)"])
    }

    // MARK: - Experiment

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
                        logger.error("tracking server unreachable at shutdown: \(error)")
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
}

extension MLflowError {
    /// The server refused these exact bytes (a 4xx other than 429).
    var isRejection: Bool {
        if case .rejected = self { return true }
        return false
    }
}
