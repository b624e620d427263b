import Foundation
import Logging
import XCTest

@testable import TracegateExport
@testable import TracegateTrace

/// The exporter with its on-disk spool: a tracking server that is down, failing or refusing loses no trace.
final class SpooledExportTests: XCTestCase {
    private var directory = ""

    override func setUp() {
        directory = NSTemporaryDirectory() + "tracegate-export-spool-\(UUID().uuidString)"
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func record(_ n: UInt64) -> TraceRecord {
        TraceRecord(
            traceID: TraceID(high: 3, low: n), rootSpanID: SpanID(value: n), name: "GET /\(n)",
            startTimeUnixNano: 1_700_000_000_000_000_000 + n, endTimeUnixNano: 1_700_000_000_100_000_000 + n,
            clientRequestID: "req-\(n)")
    }

    private func exporter(_ sink: RecordingSink, spool: ExportSpool?, maxQueued: Int = 1_000) -> TraceExporter {
        var configuration = ExporterConfiguration()
        configuration.maxBatchTraces = 10
        configuration.maxBatchDelay = .milliseconds(5)
        configuration.maxQueuedTraces = maxQueued
        configuration.initialBackoff = .milliseconds(5)
        configuration.maxBackoff = .milliseconds(20)
        configuration.drainTimeout = .seconds(5)
        return TraceExporter(
            configuration: configuration, destination: .mlflow(sink, experiment: .id("7")), logger: Logger(label: "test"), spool: spool)
    }

    private func waitUntil(_ condition: () -> Bool, seconds: Double = 10) async {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !condition() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
    }

    private func hex(_ n: UInt64) -> String { TraceID(high: 3, low: n).hex }

    func testTracesSentWhileTheServerIsDownArriveOnceItIsBackInOrderAndOnlyOnce() async throws {
        let sink = RecordingSink()
        sink.down = true
        let spool = try ExportSpool(directory: directory, maxBytes: 1 << 30)
        let exporter = exporter(sink, spool: spool)
        let run = Task { await exporter.run() }
        for n in UInt64(1)...50 { exporter.submit(record(n)) }
        await waitUntil { spool.spans.recordCount == 50 }
        XCTAssertEqual(spool.spans.recordCount, 50, "while the server is down, traces wait on disk")
        XCTAssertEqual(exporter.queuedTraces, 0, "…not in memory")
        sink.down = false
        for n in UInt64(51)...60 { exporter.submit(record(n)) }
        await waitUntil { Set(sink.infos).count == 60 }
        exporter.shutdown()
        await run.value
        let delivered = sink.batches.flatMap { $0 }
        XCTAssertEqual(delivered, (1...60).map(hex), "every trace once, in the order it finished")
        XCTAssertEqual(Set(sink.infos).count, 60)
        XCTAssertEqual(exporter.stats.dropped, 0)
        XCTAssertTrue(spool.spans.isEmpty)
        XCTAssertGreaterThan(exporter.stats.retries, 0)
    }

    func testShutdownWhileTheServerIsDownSpoolsEverythingAndTheNextRunDeliversIt() async throws {
        let sink = RecordingSink()
        sink.down = true
        do {
            let spool = try ExportSpool(directory: directory, maxBytes: 1 << 30)
            let exporter = exporter(sink, spool: spool)
            let run = Task { await exporter.run() }
            for n in UInt64(1)...25 { exporter.submit(record(n)) }
            exporter.shutdown()
            await run.value
            XCTAssertEqual(spool.spans.recordCount, 25)
            XCTAssertEqual(exporter.stats.dropped, 0)
        }
        sink.down = false
        let spool = try ExportSpool(directory: directory, maxBytes: 1 << 30)
        let exporter = exporter(sink, spool: spool)
        let run = Task { await exporter.run() }
        await waitUntil { Set(sink.infos).count == 25 }
        exporter.shutdown()
        await run.value
        XCTAssertEqual(sink.batches.flatMap { $0 }, (1...25).map(hex))
        XCTAssertEqual(exporter.stats.replayed, 25)
        XCTAssertTrue(spool.spans.isEmpty)
    }

    func testTraceInfoOwedAtShutdownIsSpooledAndSentByTheNextRun() async throws {
        let sink = RecordingSink()
        do {
            let spool = try ExportSpool(directory: directory, maxBytes: 1 << 30)
            let exporter = exporter(sink, spool: spool)
            let run = Task { await exporter.run() }
            for n in UInt64(1)...20 { exporter.submit(record(n)) }
            await waitUntil { sink.batches.flatMap { $0 }.count == 20 }
            sink.down = true  // spans stored; the server fails before the trace info
            exporter.shutdown()
            await run.value
            XCTAssertEqual(spool.spans.recordCount, 0)
            XCTAssertEqual(spool.traceInfo.recordCount + Set(sink.infos).count, 20, "trace info is sent or spooled")
        }
        sink.down = false
        let spool = try ExportSpool(directory: directory, maxBytes: 1 << 30)
        let exporter = exporter(sink, spool: spool)
        let run = Task { await exporter.run() }
        await waitUntil { Set(sink.infos).count == 20 }
        exporter.shutdown()
        await run.value
        XCTAssertEqual(Set(sink.infos), Set((1...20).map { "tr-" + hex($0) }))
        XCTAssertEqual(sink.batches.flatMap { $0 }.count, 20, "spans are not sent again for trace info")
    }

    func testAFullMemoryQueueOverflowsIntoTheSpoolInsteadOfDroppingAndKeepsTheOrder() throws {
        let sink = RecordingSink()
        let spool = try ExportSpool(directory: directory, maxBytes: 1 << 30)
        let exporter = exporter(sink, spool: spool, maxQueued: 3)
        for n in UInt64(1)...3 { exporter.submit(record(n)) }
        XCTAssertEqual(exporter.queuedTraces, 3)
        XCTAssertTrue(spool.spans.isEmpty)
        exporter.submit(record(4))
        XCTAssertEqual(spool.spans.recordCount, 1, "the oldest overflows to disk")
        for n in UInt64(5)...10 { exporter.submit(record(n)) }
        XCTAssertEqual(exporter.queuedTraces, 0, "once the spool holds traces, the rest queue behind them on disk")
        XCTAssertEqual(spool.spans.peek(max: 20)?.records.map(\.traceID.low), Array(UInt64(1)...10), "in the order they finished")
        XCTAssertEqual(exporter.stats.dropped, 0)
    }

    func testARejectedTraceGoesToTheDeadLetterFileWithItsReasonAndDoesNotBlockTheOthers() async throws {
        let sink = RecordingSink()
        sink.invalid = [hex(4)]
        let spool = try ExportSpool(directory: directory, maxBytes: 1 << 30)
        let exporter = exporter(sink, spool: spool)
        for n in UInt64(1)...8 { exporter.submit(record(n)) }
        exporter.shutdown()
        await exporter.run()
        XCTAssertEqual(sink.batches.flatMap { $0 }.count, 7)
        XCTAssertEqual(exporter.stats.rejected, 1)
        let lines = try String(contentsOfFile: directory + "/dead-letter.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 1)
        let entry = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        XCTAssertTrue((entry["reason"] as? String ?? "").contains("INVALID_PARAMETER_VALUE"))
        XCTAssertNotNil(entry["rejected_at"])
        XCTAssertEqual(((entry["record"] as? [String: Any])?["clientRequestID"] as? String), "req-4")
    }

    func testWithoutASpoolAServerDownAtShutdownLosesTracesButCountsThem() async {
        let sink = RecordingSink()
        sink.down = true
        var configuration = ExporterConfiguration()
        configuration.initialBackoff = .milliseconds(1)
        configuration.drainTimeout = .milliseconds(100)
        let clock = ManualExportClock()
        let exporter = TraceExporter(
            configuration: configuration, destination: .mlflow(sink, experiment: .id("7")), logger: Logger(label: "test"),
            clock: clock)
        for n in UInt64(1)...5 { exporter.submit(record(n)) }
        exporter.shutdown()
        let run = Task { await exporter.run() }
        // Tries at 0, 1, 3, 7, 15, 31 and 63 ms (the backoff doubling from 1 ms); the next would be at
        // 127 ms, past the drain deadline. The spans loop and 4 trace-info workers sleep between steps.
        for _ in 1...7 { await clock.advanceToNextDeadline(sleepers: 5) }
        await run.value
        XCTAssertEqual(clock.elapsed, .milliseconds(100))
        XCTAssertEqual(exporter.stats.dropped, 5)
        XCTAssertGreaterThan(exporter.stats.retries, 0)
        XCTAssertEqual(exporter.stats.retries, 7)
    }
}
