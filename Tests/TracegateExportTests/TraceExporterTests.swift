import Foundation
import Logging
import XCTest

@testable import TracegateExport
@testable import TracegateTrace

/// A tracking server stand-in: records what it is sent and fails on demand.
final class RecordingSink: MLflowTraceSink, SpanSink, @unchecked Sendable {
    private let lock = NSLock()
    private var _batches: [[String]] = []
    private var _infos: [String] = []
    private var _experimentIDs: Set<String> = []
    /// Errors to throw from the next `postTraces` calls, in order.
    var failures: [MLflowError] = []
    /// Trace ids (hex) the server refuses as invalid, wherever they appear in a batch.
    var invalid: Set<String> = []
    /// While true, every call fails as if the server were unreachable.
    private var _down = false
    var down: Bool {
        get { lock.withLock { _down } }
        set { lock.withLock { _down = newValue } }
    }

    var batches: [[String]] { lock.withLock { _batches } }
    var infos: [String] { lock.withLock { _infos } }
    /// The experiments spans were posted into.
    var experimentIDs: Set<String> { lock.withLock { _experimentIDs } }

    func postTraces(_ otlpJSON: [UInt8], experimentID: String) async throws {
        let ids = Self.traceIDs(in: otlpJSON)
        try lock.withLock {
            if _down { throw MLflowError.unreachable("connection refused") }
            if !failures.isEmpty { throw failures.removeFirst() }
            if !invalid.isDisjoint(with: ids) { throw MLflowError.rejected(status: 400, body: "INVALID_PARAMETER_VALUE") }
            _batches.append(ids)
            _experimentIDs.insert(experimentID)
        }
    }

    func startTrace(_ body: [UInt8]) async throws -> [UInt8] {
        let object = try JSONSerialization.jsonObject(with: Data(body)) as! [String: Any]
        let info = (object["trace"] as! [String: Any])["trace_info"] as! [String: Any]
        try lock.withLock {
            if _down { throw MLflowError.unreachable("connection refused") }
            _infos.append(info["trace_id"] as! String)
        }
        return body  // MLflow echoes the stored trace info
    }

    /// The same server as an OpenTelemetry backend: spans only, no experiment.
    func postSpans(_ otlpJSON: [UInt8]) async throws {
        let ids = Self.traceIDs(in: otlpJSON)
        try lock.withLock {
            if _down { throw DeliveryError.unreachable("connection refused") }
            _batches.append(ids)
        }
    }

    static func traceIDs(in otlp: [UInt8]) -> [String] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(otlp)) as? [String: Any] else { return [] }
        var ids: [String] = []
        for resource in object["resourceSpans"] as? [[String: Any]] ?? [] {
            for scope in resource["scopeSpans"] as? [[String: Any]] ?? [] {
                for span in scope["spans"] as? [[String: Any]] ?? [] { ids.append(span["traceId"] as? String ?? "") }
            }
        }
        return ids
    }
}

final class TraceExporterTests: XCTestCase {
    private func record(_ n: UInt64) -> TraceRecord {
        TraceRecord(
            traceID: TraceID(high: 1, low: n), rootSpanID: SpanID(value: n), name: "GET /\(n)",
            startTimeUnixNano: 1_700_000_000_000_000_000 + n, endTimeUnixNano: 1_700_000_000_100_000_000 + n,
            clientRequestID: "req-\(n)")
    }

    private func exporter(
        _ sink: RecordingSink, batch: Int = 10, delay: Duration = .milliseconds(50), clock: any ExportClock = ContinuousExportClock()
    ) -> TraceExporter {
        var configuration = ExporterConfiguration()
        configuration.maxBatchTraces = batch
        configuration.maxBatchDelay = delay
        configuration.initialBackoff = .milliseconds(1)
        configuration.maxBackoff = .milliseconds(5)
        return TraceExporter(
            configuration: configuration, destination: .mlflow(sink, experiment: .id("7")), logger: Logger(label: "test"), clock: clock)
    }

    /// Waits in real time for the exporter's tasks to get somewhere; the manual clock does not move meanwhile.
    private func waitUntil(_ condition: () -> Bool, seconds: Double = 10) async {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !condition() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(1)) }
    }

    func testTracesAreBatchedByCountAndEveryTraceGetsItsInfo() async {
        let sink = RecordingSink()
        let exporter = exporter(sink, batch: 10)
        for n in UInt64(1)...25 { exporter.submit(record(n)) }
        exporter.shutdown()
        await exporter.run()
        XCTAssertEqual(sink.batches.map(\.count), [10, 10, 5])
        XCTAssertEqual(Set(sink.infos).count, 25)
        XCTAssertEqual(exporter.stats.exported, 25)
    }

    func testAPartialBatchIsSentAfterTheDelay() async throws {
        let sink = RecordingSink()
        let clock = ManualExportClock()
        let exporter = exporter(sink, batch: 100, delay: .milliseconds(30), clock: clock)
        let run = Task { await exporter.run() }
        exporter.submit(record(1))
        await clock.waitForSleepers(1)
        XCTAssertEqual(clock.deadlines, [clock.start + .milliseconds(30)], "the spans loop sleeps until the batch is due, no sooner")
        clock.advance(by: .milliseconds(29))
        XCTAssertEqual(clock.deadlines.count, 1)
        XCTAssertTrue(sink.batches.isEmpty)
        clock.advance(by: .milliseconds(1))
        await waitUntil { !sink.batches.isEmpty }
        XCTAssertEqual(sink.batches.first?.count, 1, "a lone trace must not wait for a full batch")
        exporter.shutdown()
        await run.value
    }

    func testUnavailableServerIsRetriedUntilItAccepts() async {
        let sink = RecordingSink()
        sink.failures = [.unavailable(status: 503, body: ""), .unreachable("connection refused"), .unavailable(status: 429, body: "")]
        let clock = ManualExportClock()
        let exporter = exporter(sink, clock: clock)
        let run = Task { await exporter.run() }
        exporter.submit(record(1))
        var waits: [Duration] = []
        for _ in 1...7 { waits.append(await clock.advanceToNextDeadline()) }
        await waitUntil { !sink.batches.isEmpty }
        // The batch delay, then each failure's backoff (1, 2, 4 ms) - and, as the failed batch goes back
        // to an empty memory queue, the batch delay starts over from the failure.
        XCTAssertEqual(
            waits, [.milliseconds(50), .milliseconds(1), .milliseconds(49), .milliseconds(2), .milliseconds(48), .milliseconds(4), .milliseconds(46)])
        exporter.shutdown()
        await run.value
        XCTAssertEqual(sink.batches.count, 1)
        XCTAssertEqual(exporter.stats.retries, 3)
        XCTAssertEqual(exporter.stats.exported, 1)
    }

    func testAnOpenTelemetryDestinationGetsSpansOnly() async {
        let sink = RecordingSink()
        var configuration = ExporterConfiguration()
        configuration.maxBatchTraces = 10
        let exporter = TraceExporter(configuration: configuration, destination: .spans(sink), logger: Logger(label: "test"))
        for n in UInt64(1)...25 { exporter.submit(record(n)) }
        exporter.shutdown()
        await exporter.run()
        XCTAssertEqual(sink.batches.map(\.count), [10, 10, 5])
        XCTAssertEqual(sink.infos, [], "no trace-info call")
        XCTAssertEqual(sink.experimentIDs, [])
        XCTAssertNil(exporter.resolvedExperimentID)
        XCTAssertEqual(exporter.stats.exported, 25)
        XCTAssertEqual(exporter.queuedTraces, 0, "stored traces owe nothing more")
    }

    func testAnIdleExporterWaitsForWorkWithoutATimer() async {
        let sink = RecordingSink()
        let clock = ManualExportClock()
        let exporter = exporter(sink, clock: clock)
        let run = Task { await exporter.run() }
        try? await Task.sleep(for: .milliseconds(50))
        XCTAssertEqual(clock.deadlines, [], "nothing is due: no task sleeps until a deadline")
        exporter.shutdown()
        await run.value
        XCTAssertEqual(clock.elapsed, .zero, "shutdown ends the wait")
    }

    func testARejectedBatchIsSplitAndOnlyTheInvalidTraceIsSetAside() async {
        let sink = RecordingSink()
        let bad = TraceID(high: 1, low: 6).hex
        sink.invalid = [bad]
        let exporter = exporter(sink, batch: 10)
        for n in UInt64(1)...10 { exporter.submit(record(n)) }
        exporter.shutdown()
        await exporter.run()
        let delivered = sink.batches.flatMap { $0 }
        XCTAssertEqual(delivered.count, 9)
        XCTAssertFalse(delivered.contains(bad))
        XCTAssertEqual(exporter.stats.rejected, 1)
        XCTAssertEqual(exporter.stats.exported, 9)
        XCTAssertFalse(sink.infos.contains("tr-" + bad), "a set-aside trace gets no trace info")
    }

    func testAFullQueueDropsTheOldestAndCountsThem() {
        let sink = RecordingSink()
        var configuration = ExporterConfiguration()
        configuration.maxQueuedTraces = 3
        let exporter = TraceExporter(
            configuration: configuration, destination: .mlflow(sink, experiment: .id("7")), logger: Logger(label: "test"))
        for n in UInt64(1)...5 { exporter.submit(record(n)) }
        XCTAssertEqual(exporter.queuedTraces, 3)
        XCTAssertEqual(exporter.stats.dropped, 2)
    }

    func testExperimentNameIsResolvedBeforeTheFirstBatch() async {
        let sink = RecordingSink()
        let experiment = ExperimentSource.resolve(name: "chat", using: { name in
            XCTAssertEqual(name, "chat")
            return "42"
        })
        var configuration = ExporterConfiguration()
        configuration.maxBatchDelay = .milliseconds(1)
        let exporter = TraceExporter(
            configuration: configuration, destination: .mlflow(sink, experiment: experiment), logger: Logger(label: "test"))
        XCTAssertNil(exporter.resolvedExperimentID)
        exporter.submit(record(1))
        exporter.shutdown()
        await exporter.run()
        XCTAssertEqual(sink.batches.count, 1)
        XCTAssertEqual(sink.experimentIDs, ["42"])
        XCTAssertEqual(exporter.resolvedExperimentID, "42")
    }

    func testAuthHeadersFollowTheMLflowClientRules() {
        XCTAssertEqual(MLflowAuth.resolve(username: "u", password: "p", token: "t"), .basic(username: "u", password: "p"))
        XCTAssertEqual(MLflowAuth.resolve(username: nil, password: nil, token: "t"), .bearer(token: "t"))
        XCTAssertEqual(MLflowAuth.resolve(username: nil, password: nil, token: nil), .none)
        XCTAssertEqual(MLflowAuth.basic(username: "u", password: "p").headerValue, "Basic dTpw")
        XCTAssertEqual(MLflowAuth.bearer(token: "t").headerValue, "Bearer t")
    }
}

final class TraceFileTests: XCTestCase {
    func testTraceFileRoundTripsRecordsAndReportsBadLines() throws {
        let path = NSTemporaryDirectory() + "tracegate-file-test-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var record = TraceRecord(
            traceID: TraceID(high: 9, low: 9), rootSpanID: SpanID(value: 3), name: "POST /v1/chat/completions",
            startTimeUnixNano: 1, endTimeUnixNano: 2, status: .error(message: "HTTP 502"), user: "ü \"quoted\"",
            session: "s", clientRequestID: "r")
        record.attributes["k"] = .int(5)
        let writer = try TraceFileWriter(path: path)
        try writer.append(record)
        try writer.append(record)
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data("not a trace\n".utf8))
        try handle.close()
        let read = try TraceFileReader.read(path: path)
        XCTAssertEqual(read.records, [record, record])
        XCTAssertEqual(read.badLines, [3])
    }
}

final class TraceFileRotationTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "tracegate-rotation-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func record(_ n: UInt64) -> TraceRecord {
        TraceRecord(
            traceID: TraceID(high: 1, low: n), rootSpanID: SpanID(value: n), name: "POST /v1/chat/completions",
            startTimeUnixNano: 1_000 + n, endTimeUnixNano: 2_000 + n, inputs: String(repeating: "x", count: 200))  // every line the same length
    }

    private func size(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? -1
    }

    func testRotatesBySizeKeepingWholeLinesAndDeletesOnlyBeyondKeep() throws {
        let path = directory + "/traces.jsonl"
        let line = TraceRecordJSON.line(record(1)).count
        let writer = try TraceFileWriter(path: path, maxBytes: 10 * line, keep: 2)
        var deletedBytes = 0
        for n in 1...45 {
            // Groups of three lines per write, as the builder writes a group at once.
            if n % 3 == 0 {
                let lines = (n - 2...n).flatMap { TraceRecordJSON.line(record(UInt64($0))) }
                deletedBytes += try writer.write(lines: lines)
            }
        }
        let paths = [path, path + ".1", path + ".2"]
        for file in paths {
            XCTAssertLessThanOrEqual(size(file), 10 * line, "\(file) stays within trace_file_max_bytes")
            let read = try TraceFileReader.read(path: file)
            XCTAssertEqual(read.badLines, [], "no line split across files")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".3"), "at most `keep` rotated files")
        // A group that does not fit is split between files at a line: 45 lines in files of 10, the 2
        // oldest deleted. (Rotating before a whole group left files of 9 lines, and fewer traces kept.)
        let kept = try paths.reversed().flatMap { try TraceFileReader.read(path: $0).records }
        XCTAssertEqual(kept.map(\.rootSpanID.value), Array(21...45), "newest 25 traces, in order, none lost between kept files")
        XCTAssertEqual(try TraceFileReader.read(path: path + ".1").records.count, 10, "each rotated file filled to the bound")
        XCTAssertEqual(deletedBytes, 2 * 10 * line, "the deleted files are reported")
    }

    /// A group larger than a whole file still fills file after file, and a line longer than
    /// `trace_file_max_bytes` gets a file of its own rather than being lost or split.
    func testAGroupLargerThanAFileAndAnOverlongLineRotateAtLines() throws {
        let path = directory + "/traces.jsonl"
        let line = TraceRecordJSON.line(record(1)).count
        let writer = try TraceFileWriter(path: path, maxBytes: 4 * line, keep: 5)
        try writer.write(lines: (1...10).flatMap { TraceRecordJSON.line(record(UInt64($0))) })
        XCTAssertEqual(try TraceFileReader.read(path: path + ".2").records.map(\.rootSpanID.value), [1, 2, 3, 4])
        XCTAssertEqual(try TraceFileReader.read(path: path + ".1").records.map(\.rootSpanID.value), [5, 6, 7, 8])
        XCTAssertEqual(try TraceFileReader.read(path: path).records.map(\.rootSpanID.value), [9, 10])
        let long = Array(repeating: UInt8(ascii: "x"), count: 5 * line) + [UInt8(ascii: "\n")]
        try writer.write(lines: long + TraceRecordJSON.line(record(11)))
        XCTAssertEqual(size(path + ".1"), long.count, "the long line alone in its file")
        XCTAssertEqual(try TraceFileReader.read(path: path + ".2").records.map(\.rootSpanID.value), [9, 10])
        XCTAssertEqual(try TraceFileReader.read(path: path).records.map(\.rootSpanID.value), [11])
    }

    func testReopeningGoesOnFromTheFileSize() throws {
        let path = directory + "/traces.jsonl"
        let line = TraceRecordJSON.line(record(1)).count
        try TraceFileWriter(path: path, maxBytes: 2 * line, keep: 1).append(record(1))
        let reopened = try TraceFileWriter(path: path, maxBytes: 2 * line, keep: 1)
        try reopened.append(record(2))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".1"), "two lines fit")
        try reopened.append(record(3))
        XCTAssertEqual(try TraceFileReader.read(path: path + ".1").records.map(\.rootSpanID.value), [1, 2])
        XCTAssertEqual(try TraceFileReader.read(path: path).records.map(\.rootSpanID.value), [3])
    }

    func testRotatedNamesAreNumberedNewestFirst() {
        XCTAssertEqual(TraceFileWriter.rotatedPaths(of: "t.jsonl", keep: 3), ["t.jsonl.1", "t.jsonl.2", "t.jsonl.3"])
    }
}
