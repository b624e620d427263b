import XCTest

@testable import TracegateExport
@testable import TracegateTrace

/// The exporter's decisions, driven with explicit instants: no clock, no network, no spool.
final class ExportScheduleTests: XCTestCase {
    private let t0 = ContinuousClock.now

    private func record(_ n: UInt64) -> TraceRecord {
        TraceRecord(
            traceID: TraceID(high: 5, low: n), rootSpanID: SpanID(value: n), name: "GET /\(n)",
            startTimeUnixNano: 1_700_000_000_000_000_000 + n, endTimeUnixNano: 1_700_000_000_100_000_000 + n)
    }

    private func records(_ range: ClosedRange<UInt64>) -> [TraceRecord] { range.map(record) }

    private func schedule(
        batch: Int = 3, delay: Duration = .seconds(1), maxQueued: Int = 100, spool: Bool = false, traceInfo: Bool = true,
        initialBackoff: Duration = .milliseconds(200), maxBackoff: Duration = .seconds(1), drain: Duration = .seconds(5)
    ) -> ExportSchedule {
        var configuration = ExporterConfiguration()
        configuration.maxBatchTraces = batch
        configuration.maxBatchDelay = delay
        configuration.maxQueuedTraces = maxQueued
        configuration.initialBackoff = initialBackoff
        configuration.maxBackoff = maxBackoff
        configuration.drainTimeout = drain
        return ExportSchedule(configuration: configuration, hasSpool: spool, sendsTraceInfo: traceInfo)
    }

    // MARK: - Batching

    func testABatchGoesAsSoonAsItIsFull() {
        var schedule = schedule(batch: 3)
        XCTAssertEqual(schedule.nextSpanStep(now: t0, spoolHoldsSpans: false), .waitForWork)
        let first = schedule.submit(records(1...2), now: t0, spoolHoldsSpans: false)
        XCTAssertEqual(first, .init(spill: [], wakesSpans: true), "a batch deadline starts")
        XCTAssertEqual(schedule.nextSpanStep(now: t0, spoolHoldsSpans: false), .wait(until: t0 + .seconds(1)))
        let second = schedule.submit(records(3...4), now: t0 + .milliseconds(10), spoolHoldsSpans: false)
        XCTAssertEqual(second, .init(spill: [], wakesSpans: true), "the batch is full")
        XCTAssertEqual(schedule.nextSpanStep(now: t0 + .milliseconds(10), spoolHoldsSpans: false), .deliverBatch(records(1...3)))
        // What is left starts a new delay from the moment the batch was taken.
        XCTAssertEqual(schedule.nextSpanStep(now: t0 + .milliseconds(10), spoolHoldsSpans: false), .wait(until: t0 + .milliseconds(1010)))
        XCTAssertEqual(schedule.queue, [record(4)])
    }

    func testAPartialBatchGoesWhenItsOldestTraceHasWaitedTheDelay() {
        var schedule = schedule(batch: 100, delay: .seconds(1))
        XCTAssertTrue(schedule.submit([record(1)], now: t0, spoolHoldsSpans: false).wakesSpans)
        XCTAssertFalse(
            schedule.submit([record(2)], now: t0 + .milliseconds(300), spoolHoldsSpans: false).wakesSpans,
            "neither a new deadline nor a full batch: the spans loop sleeps on")
        XCTAssertEqual(schedule.nextSpanStep(now: t0 + .milliseconds(500), spoolHoldsSpans: false), .wait(until: t0 + .seconds(1)))
        XCTAssertEqual(schedule.nextSpanStep(now: t0 + .milliseconds(999), spoolHoldsSpans: false), .wait(until: t0 + .seconds(1)))
        XCTAssertEqual(schedule.nextSpanStep(now: t0 + .seconds(1), spoolHoldsSpans: false), .deliverBatch(records(1...2)))
        XCTAssertEqual(schedule.nextSpanStep(now: t0 + .seconds(1), spoolHoldsSpans: false), .waitForWork)
    }

    // MARK: - Server trouble

    func testBackoffDoublesUpToTheMaximumAndResetsWhenTheServerAnswers() {
        var schedule = schedule(batch: 1, initialBackoff: .milliseconds(200), maxBackoff: .seconds(1))
        XCTAssertTrue(schedule.serverAnswers)
        XCTAssertEqual(schedule.serverTrouble(now: t0), .milliseconds(200))
        XCTAssertEqual(schedule.retryAt, t0 + .milliseconds(200))
        XCTAssertFalse(schedule.serverAnswers)
        XCTAssertTrue(schedule.isResting(at: t0 + .milliseconds(199)))
        XCTAssertFalse(schedule.isResting(at: t0 + .milliseconds(200)))
        let t1 = t0 + .milliseconds(200)
        XCTAssertEqual(schedule.serverTrouble(now: t1), .milliseconds(400))
        XCTAssertEqual(schedule.serverTrouble(now: t1), .milliseconds(800))
        XCTAssertEqual(schedule.serverTrouble(now: t1), .seconds(1), "capped at maxBackoff")
        XCTAssertEqual(schedule.serverTrouble(now: t1), .seconds(1))
        XCTAssertEqual(schedule.retryAt, t1 + .seconds(1))
        XCTAssertEqual(schedule.stats.retries, 5)

        // Resting: a full batch waits for the end of the backoff.
        _ = schedule.submit([record(1)], now: t1, spoolHoldsSpans: false)
        XCTAssertEqual(schedule.nextSpanStep(now: t1 + .milliseconds(500), spoolHoldsSpans: false), .wait(until: t1 + .seconds(1)))
        XCTAssertEqual(schedule.nextSpanStep(now: t1 + .seconds(1), spoolHoldsSpans: false), .deliverBatch([record(1)]))

        XCTAssertTrue(schedule.serverAnswered(), "it had been in trouble")
        XCTAssertNil(schedule.retryAt)
        XCTAssertFalse(schedule.serverAnswered())
        XCTAssertEqual(schedule.serverTrouble(now: t1), .milliseconds(200), "the backoff starts over")
    }

    func testWithoutASpoolAFailedBatchGoesBackToTheFrontOfTheQueue() {
        var schedule = schedule(batch: 2, maxQueued: 3)
        _ = schedule.submit(records(1...2), now: t0, spoolHoldsSpans: false)
        guard case .deliverBatch(let batch) = schedule.nextSpanStep(now: t0, spoolHoldsSpans: false) else {
            return XCTFail("a full batch is due")
        }
        _ = schedule.submit(records(3...4), now: t0, spoolHoldsSpans: false)
        XCTAssertEqual(schedule.batchFailed(batch, now: t0), [], "nothing for a spool")
        XCTAssertEqual(schedule.queue, records(2...4), "in order, the oldest beyond the bound dropped")
        XCTAssertEqual(schedule.stats.dropped, 1)
    }

    // MARK: - Spool

    func testWhileTheSpoolHoldsTracesNewOnesGoBehindThem() {
        var schedule = schedule(batch: 10, spool: true)
        _ = schedule.submit(records(1...2), now: t0, spoolHoldsSpans: false)
        // The spool filled meanwhile (a failed batch): what memory holds goes behind it, then the spool is read back.
        XCTAssertEqual(schedule.nextSpanStep(now: t0, spoolHoldsSpans: true), .spill(records(1...2)))
        XCTAssertEqual(schedule.queue, [])
        XCTAssertEqual(schedule.nextSpanStep(now: t0, spoolHoldsSpans: true), .deliverSpool)
        XCTAssertEqual(
            schedule.submit(records(3...4), now: t0, spoolHoldsSpans: true), .init(spill: records(3...4), wakesSpans: false),
            "written behind the spool by the caller")
        XCTAssertEqual(schedule.queue, [])
        _ = schedule.serverTrouble(now: t0)
        XCTAssertEqual(schedule.nextSpanStep(now: t0, spoolHoldsSpans: true), .wait(until: t0 + .milliseconds(200)))
        XCTAssertEqual(schedule.nextSpanStep(now: t0 + .milliseconds(200), spoolHoldsSpans: true), .deliverSpool)
        XCTAssertEqual(schedule.nextSpanStep(now: t0 + .milliseconds(200), spoolHoldsSpans: false), .waitForWork, "direct again")
    }

    func testWithASpoolAFailedBatchAndWhatWaitedBehindItAreSpooledInOrder() {
        var schedule = schedule(batch: 2, spool: true)
        _ = schedule.submit(records(1...2), now: t0, spoolHoldsSpans: false)
        guard case .deliverBatch(let batch) = schedule.nextSpanStep(now: t0, spoolHoldsSpans: false) else {
            return XCTFail("a full batch is due")
        }
        _ = schedule.submit([record(3)], now: t0, spoolHoldsSpans: false)
        XCTAssertEqual(schedule.batchFailed(batch, now: t0), records(1...3))
        XCTAssertEqual(schedule.queue, [])
        XCTAssertEqual(schedule.stats.dropped, 0)
    }

    func testAFullMemoryQueueOverflowsItsOldestTraces() {
        var schedule = schedule(batch: 10, maxQueued: 3)
        XCTAssertEqual(schedule.submit(records(1...2), now: t0, spoolHoldsSpans: false).spill, [])
        let overflow = schedule.submit(records(3...5), now: t0, spoolHoldsSpans: false)
        XCTAssertEqual(overflow, .init(spill: records(1...2), wakesSpans: true))
        XCTAssertEqual(schedule.queue, records(3...5))
        // Trace info has the same bound; without a spool its overflow is counted as lost.
        XCTAssertEqual(schedule.spansStored(records(1...5), replayed: false), records(1...2))
        XCTAssertEqual(schedule.infoQueue, records(3...5))
        XCTAssertEqual(schedule.stats.traceInfoDropped, 2)
        XCTAssertEqual(schedule.stats.exported, 5)
    }

    // MARK: - Shutdown

    func testShutdownSendsWhatIsLeftAtOnceAndStopsAtTheDrainDeadline() {
        var schedule = schedule(batch: 10, delay: .seconds(60), initialBackoff: .seconds(10), maxBackoff: .seconds(10), drain: .seconds(5))
        _ = schedule.submit(records(1...2), now: t0, spoolHoldsSpans: false)
        schedule.shutdown(now: t0)
        XCTAssertEqual(schedule.drainDeadline, t0 + .seconds(5))
        XCTAssertEqual(schedule.nextSpanStep(now: t0, spoolHoldsSpans: false), .deliverBatch(records(1...2)), "no batch delay once stopping")
        XCTAssertEqual(schedule.serverTrouble(now: t0), .seconds(10))
        XCTAssertEqual(schedule.batchFailed(records(1...2), now: t0), [])
        XCTAssertEqual(
            schedule.nextSpanStep(now: t0 + .seconds(1), spoolHoldsSpans: false), .wait(until: t0 + .seconds(5)),
            "the drain deadline comes before the end of the backoff")
        XCTAssertEqual(schedule.nextSpanStep(now: t0 + .seconds(5), spoolHoldsSpans: false), .finish)
        let leftovers = schedule.takeLeftovers()
        XCTAssertEqual(leftovers.spans, records(1...2))
        XCTAssertEqual(leftovers.traceInfo, [])
        XCTAssertEqual(schedule.queue, [])
    }

    /// The builder tells every exporter at once that nothing more is coming, and each exporter's service
    /// says so again on its turn: the second call must not push the deadline back.
    func testAskingToShutDownAgainKeepsTheFirstDeadline() {
        var schedule = schedule(drain: .seconds(5))
        schedule.shutdown(now: t0)
        schedule.shutdown(now: t0 + .seconds(3))
        XCTAssertEqual(schedule.drainDeadline, t0 + .seconds(5))
    }

    func testShutdownWithAnEmptyQueueFinishesAtOnce() {
        var schedule = schedule()
        schedule.shutdown(now: t0)
        XCTAssertEqual(schedule.nextSpanStep(now: t0, spoolHoldsSpans: false), .finish)
    }

    func testShutdownWhileTheServerIsDownWithASpoolFinishesAtOnce() {
        var schedule = schedule(spool: true)
        _ = schedule.submit(records(1...2), now: t0, spoolHoldsSpans: false)
        _ = schedule.spansStored([record(9)], replayed: false)
        _ = schedule.serverTrouble(now: t0)
        schedule.shutdown(now: t0)
        XCTAssertEqual(schedule.nextSpanStep(now: t0, spoolHoldsSpans: false), .finish, "the spool keeps the traces")
        XCTAssertEqual(schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: false), .finish)
        let leftovers = schedule.takeLeftovers()
        XCTAssertEqual(leftovers.spans, records(1...2))
        XCTAssertEqual(leftovers.traceInfo, [record(9)])
        XCTAssertEqual(schedule.stats.traceInfoDropped, 0, "a spool keeps it")
    }

    func testShutdownWhileTracesWaitInTheSpoolFinishesAtOnce() {
        var schedule = schedule(spool: true)
        schedule.shutdown(now: t0)
        XCTAssertEqual(schedule.nextSpanStep(now: t0, spoolHoldsSpans: true), .finish)
    }

    func testWithoutASpoolTraceInfoLeftAtTheEndIsCountedAsLost() {
        var schedule = schedule()
        _ = schedule.spansStored(records(1...2), replayed: false)
        XCTAssertEqual(schedule.takeLeftovers().traceInfo, records(1...2))
        XCTAssertEqual(schedule.stats.traceInfoDropped, 2)
    }

    // MARK: - Trace info

    func testTraceInfoWaitsWhileSpansAreBackloggedThenGoesInOrder() {
        var schedule = schedule(batch: 2, spool: true)
        XCTAssertEqual(schedule.spansStored(records(1...2), replayed: true), [])
        XCTAssertEqual(schedule.stats.replayed, 2)
        XCTAssertEqual(schedule.infoQueue, records(1...2))
        _ = schedule.submit(records(3...4), now: t0, spoolHoldsSpans: false)
        XCTAssertEqual(
            schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: false), .waitForWork,
            "a full batch of spans waits")
        XCTAssertEqual(schedule.nextSpanStep(now: t0, spoolHoldsSpans: false), .deliverBatch(records(3...4)))
        XCTAssertEqual(
            schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: true, spoolHoldsTraceInfo: false), .waitForWork,
            "spans waiting in the spool are a backlog too")
        XCTAssertEqual(schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: false), .send(record(1)))
        XCTAssertEqual(schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: false), .send(record(2)))
        XCTAssertEqual(
            schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: false), .waitForWork,
            "the spans are not done: more may come")
    }

    func testTraceInfoRestsWithTheServer() {
        var schedule = schedule()
        _ = schedule.spansStored([record(1)], replayed: false)
        _ = schedule.serverTrouble(now: t0)
        XCTAssertEqual(
            schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: false), .wait(until: t0 + .milliseconds(200)))
        XCTAssertEqual(
            schedule.nextTraceInfoStep(now: t0 + .milliseconds(200), spoolHoldsSpans: false, spoolHoldsTraceInfo: false), .send(record(1)))
    }

    func testSpooledTraceInfoIsReadBackByOneWorkerAtATime() {
        var schedule = schedule(spool: true)
        XCTAssertEqual(schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: true), .refillFromSpool)
        XCTAssertEqual(
            schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: true), .waitForWork, "another worker is reading")
        schedule.refilled(records(1...2))
        XCTAssertEqual(schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: true), .send(record(1)))
        XCTAssertEqual(schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: true), .send(record(2)))
        XCTAssertEqual(schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: true), .refillFromSpool)
    }

    func testTraceInfoAfterTheSpansAreDoneEmptiesItsQueueThenFinishes() {
        var schedule = schedule(batch: 2)
        _ = schedule.spansStored(records(1...2), replayed: false)
        _ = schedule.submit(records(3...4), now: t0, spoolHoldsSpans: false)
        schedule.finishSpans()
        XCTAssertEqual(
            schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: true, spoolHoldsTraceInfo: true), .send(record(1)),
            "no spans will be sent any more: no backlog to wait for")
        XCTAssertEqual(schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: true, spoolHoldsTraceInfo: true), .send(record(2)))
        XCTAssertEqual(
            schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: true, spoolHoldsTraceInfo: true), .finish, "spooled trace info is for the next run")
    }

    func testTraceInfoWaitsNoLongerThanTheDrainDeadline() {
        var schedule = schedule(drain: .seconds(5))
        schedule.shutdown(now: t0)
        XCTAssertEqual(schedule.nextTraceInfoStep(now: t0, spoolHoldsSpans: false, spoolHoldsTraceInfo: false), .wait(until: t0 + .seconds(5)))
        _ = schedule.spansStored([record(1)], replayed: false)
        XCTAssertEqual(schedule.nextTraceInfoStep(now: t0 + .seconds(5), spoolHoldsSpans: false, spoolHoldsTraceInfo: false), .finish)
    }

    func testWithoutTraceInfoStoredTracesOweNothing() {
        var schedule = schedule(traceInfo: false)
        XCTAssertEqual(schedule.spansStored(records(1...2), replayed: false), [])
        XCTAssertEqual(schedule.infoQueue, [])
        XCTAssertEqual(schedule.stats.exported, 2)
    }
}
