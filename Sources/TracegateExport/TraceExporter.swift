import Logging
import NIOConcurrencyHelpers
import TracegateTrace

/// Batches finished traces and delivers them: OTLP `/v1/traces` for the spans and, to MLflow,
/// StartTraceV3 per stored trace for `client_request_id` and metadata, with bounded concurrency.
///
/// With a spool, nothing is lost to a tracking-server outage. Spans go out in two modes. *Direct*:
/// traces wait in memory and go out in batches. *Spooling*: while the spool's `spans/` queue holds
/// traces (the server failed, memory filled up, or an earlier run left some), new traces go to disk
/// behind them, and batches are read back oldest first once the server answers again; when that
/// queue is empty the exporter is direct again. Trace info, one slow call per trace, has its own
/// memory queue that overflows into `info/`, so it never holds back the spans. At shutdown delivery
/// goes on for at most `drainTimeout` (less when the server is down); what is left is spooled.
///
/// The decisions are `ExportSchedule`'s; this class reads the clock, carries out its steps (network,
/// spool) and sleeps until new work or the next deadline. `submit` never waits on the network (it is
/// called by the trace builder); delivery runs in `run()`.
public final class TraceExporter: Sendable {
    /// Where spans go, and the MLflow experiment for trace info, once the experiment is known.
    private struct Connection {
        let spans: any SpanSink
        let traceInfo: (server: any MLflowTraceSink, experimentID: String)?
    }

    private let configuration: ExporterConfiguration
    private let destination: ExportDestination
    private let spool: ExportSpool?
    private let logger: Logger
    private let clock: any ExportClock
    private let schedule: NIOLockedValueBox<ExportSchedule>
    private let experimentID = NIOLockedValueBox<String?>(nil)
    /// Wakes the spans loop: new work, shutdown, the server answering again.
    private let spansWake = WakeSignal()
    /// Wakes the trace-info workers: trace info owed, the spans backlog shrinking, shutdown.
    private let traceInfoWake = WakeSignal()
    /// Ends a wait for the experiment at shutdown.
    private let stopWake = WakeSignal()
    /// Spool write failures (a full disk fails every write): logged at most every 10 s.
    private let spoolFailures = LogThrottle()

    public init(
        configuration: ExporterConfiguration, destination: ExportDestination, logger: Logger, spool: ExportSpool? = nil,
        clock: any ExportClock = ContinuousExportClock()
    ) {
        self.configuration = configuration
        self.destination = destination
        self.spool = spool
        self.logger = logger
        self.clock = clock
        var sendsTraceInfo = false
        if case .mlflow = destination { sendsTraceInfo = true }
        schedule = NIOLockedValueBox(ExportSchedule(configuration: configuration, hasSpool: spool != nil, sendsTraceInfo: sendsTraceInfo))
        if let spool, !spool.spans.isEmpty || !spool.traceInfo.isEmpty {
            logger.notice(
                "the spool holds traces from an earlier run; replaying them first",
                metadata: ["spans_owed": "\(spool.spans.recordCount)", "trace_info_owed": "\(spool.traceInfo.recordCount)"])
        }
    }

    public var stats: ExporterStats { schedule.withLockedValue { $0.stats } }
    /// The MLflow experiment traces go to, once known (a name is resolved before the first delivery).
    public var resolvedExperimentID: String? {
        guard case .mlflow(_, let experiment) = destination else { return nil }
        if case .id(let id) = experiment { return id }
        return experimentID.withLockedValue { $0 }
    }
    public var queuedTraces: Int { schedule.withLockedValue { $0.queue.count + $0.infoQueue.count } }
    public var spooledTraces: Int { (spool?.spans.recordCount ?? 0) + (spool?.traceInfo.recordCount ?? 0) }
    public var spooledBytes: Int { (spool?.spans.byteCount ?? 0) + (spool?.traceInfo.byteCount ?? 0) }

    /// Traces still owing their spans (memory queue and spool) while the server answers: how far
    /// behind a working tracking server is. Nil while it does not answer (an outage: then every trace
    /// is kept, up to the spool's bound).
    public var spanBacklog: Int? {
        let (queued, answering) = schedule.withLockedValue { ($0.queue.count, $0.serverAnswers) }
        guard answering else { return nil }
        return queued + (spool?.spans.recordCount ?? 0)
    }

    /// True when a new trace could only be dropped: a caller can skip building it.
    public var isFull: Bool {
        spool == nil && schedule.withLockedValue { $0.queue.count >= configuration.maxQueuedTraces }
    }

    /// Counts a trace the caller dropped because the queue was full.
    public func countDropped() { schedule.withLockedValue { $0.stats.dropped += 1 } }

    /// Queues a finished trace. Never waits on the network; past the memory bound the oldest traces go
    /// to the spool (or, without one, are dropped and counted).
    public func submit(_ record: TraceRecord) { submit(contentsOf: [record]) }

    /// Queues finished traces, in order. While the spool holds traces, new ones are written behind them
    /// at once, on the caller's thread (the trace builder's, whose priority is low), so the exporter
    /// itself only reads the spool back.
    public func submit(contentsOf records: [TraceRecord]) {
        let spoolHoldsSpans = spoolHoldsSpans
        let now = clock.now
        let submission = schedule.withLockedValue { $0.submit(records, now: now, spoolHoldsSpans: spoolHoldsSpans) }
        spill(submission.spill, to: spool?.spans)
        if submission.wakesSpans { spansWake.signal() }
    }

    /// Asks `run()` to deliver what it can within `drainTimeout`, spool the rest, and return.
    public func shutdown() {
        let now = clock.now
        schedule.withLockedValue { $0.shutdown(now: now) }
        stopWake.signal()
        spansWake.signal()
        traceInfoWake.signal()
    }

    /// Delivers until `shutdown()`; returns once every trace is delivered, spooled or counted as dropped.
    public func run() async {
        if let connection = await connect() {
            async let info: Void = runTraceInfo(connection)
            await runSpans(connection.spans)
            schedule.withLockedValue { $0.finishSpans() }
            traceInfoWake.signal()
            await info
        }
        // Whatever is still in memory was not delivered in time: keep it for the next run.
        let leftovers = schedule.withLockedValue { $0.takeLeftovers() }
        spill(leftovers.spans, to: spool?.spans)
        spill(leftovers.traceInfo, to: spool?.traceInfo, countingDrops: false)
        spool?.spans.sync()
        spool?.traceInfo.sync()
    }

    private var spoolHoldsSpans: Bool { !(spool?.spans.isEmpty ?? true) }

    // MARK: - Spans

    private func runSpans(_ sink: any SpanSink) async {
        while true {
            let mark = spansWake.mark()
            let spoolHoldsSpans = spoolHoldsSpans
            let now = clock.now
            switch schedule.withLockedValue({ $0.nextSpanStep(now: now, spoolHoldsSpans: spoolHoldsSpans) }) {
            case .finish:
                return
            case .waitForWork:
                await spansWake.wait(since: mark, until: nil, clock: clock)
            case .wait(let deadline):
                await spansWake.wait(since: mark, until: deadline, clock: clock)
            case .spill(let traces):
                spill(traces, to: spool?.spans)
            case .deliverBatch(let batch):
                traceInfoWake.signal()  // the backlog of spans shrank
                switch await postSpans(batch, to: sink) {
                case .stored(let stored):
                    recordSuccess(stored, replayed: false)
                case .retryLater:
                    let now = clock.now
                    spill(schedule.withLockedValue { $0.batchFailed(batch, now: now) }, to: spool?.spans)
                }
            case .deliverSpool:
                await deliverFromSpool(to: sink)
            }
        }
    }

    /// Sends the oldest spooled batch and acknowledges it once stored (or set aside).
    private func deliverFromSpool(to sink: any SpanSink) async {
        guard let spans = spool?.spans, let batch = spans.peek(max: configuration.maxBatchTraces) else { return }
        if batch.unreadableLines > 0 {
            logger.error("the spool had \(batch.unreadableLines) unreadable lines (a torn write?); skipped")
        }
        var stored: [TraceRecord] = []
        if !batch.records.isEmpty {
            guard case .stored(let records) = await postSpans(batch.records, to: sink) else { return }
            stored = records
        }
        spans.acknowledge(batch)
        recordSuccess(stored, replayed: true)
    }

    /// After a delivery: the server is well again, and the stored traces are owed their trace info.
    private func recordSuccess(_ stored: [TraceRecord], replayed: Bool) {
        let overflow = schedule.withLockedValue { $0.spansStored(stored, replayed: replayed) }
        spill(overflow, to: spool?.traceInfo, countingDrops: false)
        traceInfoWake.signal()
    }

    private enum Delivery { case stored([TraceRecord]), retryLater }

    /// Posts `records` as one OTLP batch. A batch the server rejects is split in halves until the
    /// invalid traces are found and set aside. A server in trouble (5xx, 429, unreachable) sets the
    /// next try after a growing backoff.
    private func postSpans(_ records: [TraceRecord], to sink: any SpanSink) async -> Delivery {
        let body = OTLPJSON.exportRequest(
            records, serviceName: configuration.serviceName, resourceAttributes: configuration.resourceAttributes,
            linksParents: configuration.linksParentSpans)
        do {
            try await sink.postSpans(body)
            return .stored(records)
        } catch let error as DeliveryError where error.isRetryable {
            serverTrouble(error, traces: records.count)
            return .retryLater
        } catch {
            guard records.count > 1 else {
                setAside(records[0], reason: "\(error)")
                return .stored([])
            }
            let half = records.count / 2
            guard case .stored(let first) = await postSpans(Array(records[..<half]), to: sink) else { return .retryLater }
            // The first half is stored; if the server fails now, resending it with the rest is harmless (upserts).
            guard case .stored(let second) = await postSpans(Array(records[half...]), to: sink) else { return .retryLater }
            return .stored(first + second)
        }
    }

    private func serverTrouble(_ error: any Error, traces: Int) {
        let now = clock.now
        let delay = schedule.withLockedValue { $0.serverTrouble(now: now) }
        logger.warning(
            "trace export failed; retrying later", metadata: ["error": "\(error)", "traces": "\(traces)", "retry_in": "\(delay)"])
    }

    /// A trace the server refuses as invalid: kept in the dead-letter file with the reason, never retried.
    private func setAside(_ record: TraceRecord, reason: String) {
        schedule.withLockedValue { $0.stats.rejected += 1 }
        logger.error("tracking server rejected a trace; set aside", metadata: ["trace_id": "\(record.traceID.mlflowID)", "error": "\(reason)"])
        do {
            try spool?.deadLetters.append(record, reason: reason)
        } catch {
            logger.error("cannot write the dead-letter file: \(error)")
        }
    }

    /// Appends traces to one of the spool's queues. Without a spool, or when writing fails, they are
    /// lost: counted as dropped unless `countingDrops` is false (trace info, counted on its own).
    private func spill(_ traces: [TraceRecord], to queue: TraceSpool?, countingDrops: Bool = true) {
        guard !traces.isEmpty else { return }
        guard let queue else {
            if countingDrops { schedule.withLockedValue { $0.stats.dropped += traces.count } }
            return
        }
        do {
            let lost = try queue.append(traces)
            schedule.withLockedValue { state in
                state.stats.spooled += traces.count
                if countingDrops { state.stats.dropped += lost } else { state.stats.traceInfoDropped += lost }
            }
            if lost > 0 {
                logger.error("the spool queue \(queue.configuration.directory) is full (\(queue.configuration.maxBytes) bytes): dropped its \(lost) oldest traces")
            }
        } catch {
            schedule.withLockedValue { state in
                if countingDrops { state.stats.dropped += traces.count } else { state.stats.traceInfoDropped += traces.count }
            }
            if let total = spoolFailures.record(traces.count) {
                logger.error("cannot write to the spool; \(total) traces lost so far: \(error)")
            }
        }
    }

    // MARK: - Trace info

    /// `startTraceConcurrency` workers send StartTraceV3 for stored traces until the spans are done and
    /// nothing is left, or the drain deadline passes. Nothing to do without MLflow.
    private func runTraceInfo(_ connection: Connection) async {
        guard let target = connection.traceInfo else { return }
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<max(1, configuration.startTraceConcurrency) {
                group.addTask { await self.traceInfoWorker(target.server, experimentID: target.experimentID) }
            }
        }
    }

    private func traceInfoWorker(_ server: any MLflowTraceSink, experimentID: String) async {
        while true {
            let mark = traceInfoWake.mark()
            let spoolHoldsSpans = spoolHoldsSpans
            let spoolHoldsTraceInfo = !(spool?.traceInfo.isEmpty ?? true)
            let now = clock.now
            let step = schedule.withLockedValue {
                $0.nextTraceInfoStep(now: now, spoolHoldsSpans: spoolHoldsSpans, spoolHoldsTraceInfo: spoolHoldsTraceInfo)
            }
            switch step {
            case .finish: return
            case .send(let record): await startTrace(record, on: server, experimentID: experimentID)
            case .refillFromSpool: refillTraceInfo()
            case .waitForWork: await traceInfoWake.wait(since: mark, until: nil, clock: clock)
            case .wait(let deadline): await traceInfoWake.wait(since: mark, until: deadline, clock: clock)
            }
        }
    }

    /// Moves a batch of spooled trace-info work into memory. The batch is acknowledged at once: a
    /// crash before it is sent loses only trace info, never spans.
    private func refillTraceInfo() {
        let batch = spool?.traceInfo.peek(max: configuration.maxBatchTraces)
        if let batch { spool?.traceInfo.acknowledge(batch) }
        schedule.withLockedValue { $0.refilled(batch?.records ?? []) }
        traceInfoWake.signal()
    }

    private func startTrace(_ record: TraceRecord, on server: any MLflowTraceSink, experimentID: String) async {
        let body = StartTraceV3.body(record, experimentID: experimentID)
        var backoff = configuration.initialBackoff
        for attempt in 1...4 {
            do {
                let echoed = try await server.startTrace(body)
                if StartTraceV3.responseConfirms(echoed, record: record) {
                    if schedule.withLockedValue({ $0.serverAnswered() }) {
                        spansWake.signal()  // its rest after trouble is over
                        traceInfoWake.signal()
                    }
                    return
                }
                throw MLflowError.unexpectedResponse("StartTraceV3 echo does not match what was sent")
            } catch let error as MLflowError where error.isRetryable {
                if attempt < 4 && !schedule.withLockedValue({ $0.stopping }) {
                    try? await clock.sleep(for: backoff)
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
                schedule.withLockedValue { $0.stats.startTraceFailures += 1 }
                setAside(record, reason: "StartTraceV3: \(error)")
                return
            } catch {
                countTraceInfoFailure(record, error)
                return
            }
        }
    }

    private func countTraceInfoFailure(_ record: TraceRecord, _ error: any Error) {
        schedule.withLockedValue { $0.stats.startTraceFailures += 1 }
        logger.warning(
            "could not set trace info (client_request_id, metadata)",
            metadata: ["trace_id": "\(record.traceID.mlflowID)", "error": "\(error)"])
    }

    // MARK: - Experiment

    /// Where deliveries go: for MLflow, once the experiment id is known. Nil when it cannot be had
    /// (a deleted experiment, or shutdown before the server answered).
    private func connect() async -> Connection? {
        switch destination {
        case .spans(let sink):
            return Connection(spans: sink, traceInfo: nil)
        case .mlflow(let server, let experiment):
            guard let id = await resolveExperiment(experiment) else { return nil }
            return Connection(spans: MLflowSpanSink(server: server, experimentID: id), traceInfo: (server, id))
        }
    }

    /// The experiment id, resolved once; retried while the server is unreachable.
    private func resolveExperiment(_ experiment: ExperimentSource) async -> String? {
        switch experiment {
        case .id(let id):
            return id
        case .resolve(let name, let resolve):
            var backoff = configuration.initialBackoff
            while true {
                let mark = stopWake.mark()
                do {
                    let id = try await resolve(name)
                    experimentID.withLockedValue { $0 = id }
                    logger.info("exporting traces", metadata: ["experiment": "\(name)", "experiment_id": "\(id)"])
                    return id
                } catch let error as MLflowError where error.isRetryable {
                    if schedule.withLockedValue({ $0.stopping }) {
                        logger.error("tracking server unreachable at shutdown: \(error)")
                        return nil
                    }
                    logger.warning("cannot reach the tracking server yet, retrying", metadata: ["error": "\(error)"])
                    await stopWake.wait(since: mark, until: clock.now + backoff, clock: clock)
                    backoff = min(backoff * 2, configuration.maxBackoff)
                } catch {
                    logger.critical("traces cannot be exported: \(error)")
                    return nil
                }
            }
        }
    }
}

extension MLflowError {
    /// The server refused these exact bytes (a 4xx other than 429).
    var isRejection: Bool {
        if case .rejected = self { return true }
        return false
    }
}
