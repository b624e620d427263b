import TracegateTrace

/// The exporter's decisions as a function of its state and the instant it is told: when a batch is
/// due, what queues behind the spool, how long to rest after server trouble, when trace info may go,
/// and when delivery ends at shutdown. It reads no clock and does no I/O: `TraceExporter` asks it
/// for the next step with the time and the facts of the spool, and carries the step out.
struct ExportSchedule {
    typealias Instant = ContinuousClock.Instant

    /// What the spans loop does next.
    enum SpanStep: Equatable {
        /// Post these traces, taken off the memory queue, as one batch.
        case deliverBatch([TraceRecord])
        /// Post the oldest batch of the spool's `spans/` queue.
        case deliverSpool
        /// Write these traces, taken off the memory queue, to the spool behind the traces it holds.
        case spill([TraceRecord])
        /// Nothing is due until new work or shutdown.
        case waitForWork
        /// Nothing is due before this instant (new work or shutdown may change that).
        case wait(until: Instant)
        /// Delivery is over; what is left in memory is for the spool.
        case finish
    }

    /// What a trace-info worker does next.
    enum TraceInfoStep: Equatable {
        /// StartTraceV3 for this stored trace, taken off the memory queue.
        case send(TraceRecord)
        /// Move a batch of the spool's `info/` queue into memory, then call `refilled`.
        case refillFromSpool
        case waitForWork
        case wait(until: Instant)
        case finish
    }

    /// What `submit` leaves to its caller.
    struct Submission: Equatable {
        /// Traces for the spool's `spans/` queue (all of them while it holds traces, else the overflow).
        var spill: [TraceRecord] = []
        /// Whether the spans loop may have something new to do (a batch deadline starts, a batch is full).
        var wakesSpans = false
    }

    let configuration: ExporterConfiguration
    let hasSpool: Bool
    /// Whether stored traces are owed StartTraceV3 (MLflow).
    let sendsTraceInfo: Bool

    private(set) var queue: [TraceRecord] = []
    private(set) var oldestQueuedAt: Instant?
    private(set) var stopping = false
    /// Past this instant, delivery stops and what is left is spooled.
    private(set) var drainDeadline: Instant?
    /// Stored traces still waiting for StartTraceV3 (client_request_id, metadata).
    private(set) var infoQueue: [TraceRecord] = []
    private(set) var spansDone = false
    /// A worker is moving trace info from the spool into memory.
    private(set) var refilling = false
    /// The server is in trouble: no delivery before this instant. Cleared when it answers.
    private(set) var retryAt: Instant?
    /// The rest after the next server trouble.
    private(set) var backoff: Duration
    var stats = ExporterStats()

    init(configuration: ExporterConfiguration, hasSpool: Bool, sendsTraceInfo: Bool) {
        self.configuration = configuration
        self.hasSpool = hasSpool
        self.sendsTraceInfo = sendsTraceInfo
        backoff = configuration.initialBackoff
    }

    /// Waiting out a backoff after server trouble.
    func isResting(at now: Instant) -> Bool { retryAt.map { now < $0 } ?? false }

    /// Whether the server is taking deliveries (no trouble since it last answered).
    var serverAnswers: Bool { retryAt == nil }

    // MARK: - Spans

    /// Queues finished traces in order. While the spool holds traces, they and the memory queue go
    /// behind them; past the memory bound, the oldest overflow.
    mutating func submit(_ records: [TraceRecord], now: Instant, spoolHoldsSpans: Bool) -> Submission {
        if spoolHoldsSpans {
            defer {
                queue.removeAll()
                oldestQueuedAt = nil
            }
            return Submission(spill: queue + records)
        }
        let wasEmpty = queue.isEmpty
        if wasEmpty { oldestQueuedAt = now }
        queue.append(contentsOf: records)
        var submission = Submission(wakesSpans: (wasEmpty && !queue.isEmpty) || queue.count >= configuration.maxBatchTraces)
        let excess = queue.count - configuration.maxQueuedTraces
        if excess > 0 {
            submission.spill = Array(queue.prefix(excess))
            queue.removeFirst(excess)
            submission.wakesSpans = true
        }
        return submission
    }

    /// Delivery goes on until `drainTimeout` from now at most, and ends sooner when the spool can
    /// keep what is left (the server is down, or traces already wait on disk). Only the first call
    /// sets the deadline: asking again never extends it.
    mutating func shutdown(now: Instant) {
        guard !stopping else { return }
        stopping = true
        drainDeadline = now + configuration.drainTimeout
    }

    mutating func nextSpanStep(now: Instant, spoolHoldsSpans: Bool) -> SpanStep {
        let pastDeadline = drainDeadline.map { now >= $0 } ?? false
        if stopping && (pastDeadline || (hasSpool && (spoolHoldsSpans || retryAt != nil))) { return .finish }
        if spoolHoldsSpans {
            if !queue.isEmpty {
                // Newer traces queue behind the spooled ones.
                defer {
                    queue.removeAll()
                    oldestQueuedAt = nil
                }
                return .spill(queue)
            }
            if let retryAt, now < retryAt { return .wait(until: earliest(retryAt, drainDeadline)) }
            return .deliverSpool
        }
        if let retryAt, now < retryAt { return .wait(until: earliest(retryAt, drainDeadline)) }
        if queue.isEmpty { return stopping ? .finish : .waitForWork }
        let batchDeadline = (oldestQueuedAt ?? now) + configuration.maxBatchDelay
        guard stopping || queue.count >= configuration.maxBatchTraces || now >= batchDeadline else {
            return .wait(until: batchDeadline)
        }
        let count = min(configuration.maxBatchTraces, queue.count)
        let batch = Array(queue.prefix(count))
        queue.removeFirst(count)
        oldestQueuedAt = queue.isEmpty ? nil : now
        return .deliverBatch(batch)
    }

    /// A batch from `deliverBatch` the server could not take. With a spool, it and what waited behind
    /// it are returned for the spool, in order; without one it goes back to the front of the memory
    /// queue, which loses its oldest traces beyond the bound.
    mutating func batchFailed(_ batch: [TraceRecord], now: Instant) -> [TraceRecord] {
        if hasSpool {
            defer {
                queue.removeAll()
                oldestQueuedAt = nil
            }
            return batch + queue
        }
        queue.insert(contentsOf: batch, at: 0)
        let excess = queue.count - configuration.maxQueuedTraces
        if excess > 0 {
            queue.removeFirst(excess)
            stats.dropped += excess
        }
        if oldestQueuedAt == nil { oldestQueuedAt = now }
        return []
    }

    /// The server is in trouble (5xx, 429, unreachable): no delivery for a backoff that doubles up to
    /// `maxBackoff`. Returns the backoff.
    mutating func serverTrouble(now: Instant) -> Duration {
        stats.retries += 1
        let delay = backoff
        retryAt = now + delay
        backoff = min(backoff * 2, configuration.maxBackoff)
        return delay
    }

    /// The server answered: delivery may go on at once. Returns whether it had been in trouble.
    @discardableResult
    mutating func serverAnswered() -> Bool {
        defer {
            retryAt = nil
            backoff = configuration.initialBackoff
        }
        return retryAt != nil
    }

    /// Traces whose spans the server stored: they are owed their trace info. Returns the overflow of
    /// the trace-info queue, for the spool's `info/` queue (counted as lost without a spool).
    mutating func spansStored(_ stored: [TraceRecord], replayed: Bool) -> [TraceRecord] {
        serverAnswered()
        stats.exported += stored.count
        if replayed { stats.replayed += stored.count }
        guard sendsTraceInfo else { return [] }
        infoQueue.append(contentsOf: stored)
        let excess = infoQueue.count - configuration.maxQueuedTraces
        guard excess > 0 else { return [] }
        defer { infoQueue.removeFirst(excess) }
        if !hasSpool { stats.traceInfoDropped += excess }
        return Array(infoQueue.prefix(excess))
    }

    /// The spans loop has returned.
    mutating func finishSpans() { spansDone = true }

    /// What memory still holds once delivery is over, emptied: traces owing spans and traces owing
    /// trace info (the latter counted as lost without a spool).
    mutating func takeLeftovers() -> (spans: [TraceRecord], traceInfo: [TraceRecord]) {
        defer {
            queue.removeAll()
            oldestQueuedAt = nil
            infoQueue.removeAll()
        }
        if !hasSpool { stats.traceInfoDropped += infoQueue.count }
        return (queue, infoQueue)
    }

    // MARK: - Trace info

    mutating func nextTraceInfoStep(now: Instant, spoolHoldsSpans: Bool, spoolHoldsTraceInfo: Bool) -> TraceInfoStep {
        if let drainDeadline, now >= drainDeadline { return .finish }
        if stopping && retryAt != nil && hasSpool { return .finish }  // server down: the spool keeps it
        if let retryAt, now < retryAt { return .wait(until: earliest(retryAt, drainDeadline)) }  // let the server recover
        let canRefill = infoQueue.isEmpty && spoolHoldsTraceInfo && !refilling
        // Spans first: they make a trace visible. While a backlog of them waits to be sent, trace info
        // (one slow call per trace on the same server) waits too.
        if !spansDone && (queue.count >= configuration.maxBatchTraces || spoolHoldsSpans) {
            return canRefill ? refill() : waitForWork()
        }
        if !infoQueue.isEmpty { return .send(infoQueue.removeFirst()) }
        if spansDone { return .finish }
        return canRefill ? refill() : waitForWork()
    }

    /// Trace info read from the spool (and acknowledged there) after `refillFromSpool`.
    mutating func refilled(_ records: [TraceRecord]) {
        refilling = false
        infoQueue.append(contentsOf: records)
    }

    private mutating func refill() -> TraceInfoStep {
        refilling = true
        return .refillFromSpool
    }

    private func waitForWork() -> TraceInfoStep {
        drainDeadline.map { .wait(until: $0) } ?? .waitForWork
    }

    private func earliest(_ instant: Instant, _ other: Instant?) -> Instant {
        other.map { min(instant, $0) } ?? instant
    }
}
