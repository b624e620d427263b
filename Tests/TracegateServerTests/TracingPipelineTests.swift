import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import XCTest

@testable import TracegateConfig
@testable import TracegateExport
@testable import TracegateProxy
@testable import TracegateTrace
@testable import TracegateServer

final class TracingPipelineTests: XCTestCase {
    /// A fresh temporary directory.
    private func makeDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    /// Full capture, traces to `traces.jsonl` in `directory`.
    private static func traceFileSettings(in directory: String) -> TracegateSettings {
        var settings = TracegateSettings()
        settings.traceFile = directory + "/traces.jsonl"
        settings.traceFileMaxBytes = 1 << 20
        settings.traceFileKeep = 1
        settings.capture = .full
        return settings
    }

    /// What the event loops queued comes back to them once built: the builder thread frees neither a
    /// capture nor a trace built in place (`LoopReturns`).
    func testTheBuilderSendsWhatItBuiltBackToTheLoopsInsteadOfFreeingIt() async throws {
        let directory = try makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var settings = Self.traceFileSettings(in: directory)
        settings.captureQueueSize = 10
        settings.captureMemoryLimit = 1 << 20
        settings.sampleRatio = 1
        let logger = Logger(label: "test")
        let pipeline = try XCTUnwrap(try TracingPipeline(settings: settings, metrics: TracegateMetrics(), logger: logger))
        let inPlace = try XCTUnwrap(pipeline.inPlace)

        // A capture, as an event loop's observer makes it.
        let scratch = CaptureQueue<CapturedExchange>(capacity: 1)
        let observer = TraceObserver(settings: TraceCaptureSettings(settings: settings), captures: scratch, budget: pipeline.captureBudget)
        var bytes = ByteBuffer(string: "GET /v1/models HTTP/1.1\r\nHost: backend\r\n\r\n")
        var parser = HeadParser(requestIDHeader: "X-Request-ID", maxHeadBytes: 32 * 1024)
        let length = try XCTUnwrap(try parser.headLength(in: &bytes))
        let head = try parser.parseRequest(bytes.readSlice(length: length)!)
        observer.exchangeFinished(
            ExchangeSummary(
                requestID: "req-1", method: head.method, target: head.uri, clientAddress: "10.0.0.1", status: 200,
                requestBodyBytes: 0, responseBodyBytes: 0, startedAtEpochNanos: 0, duration: .milliseconds(3),
                timeToFirstByte: .milliseconds(2), outcome: .completed),
            tap: observer.exchangeStarted(head, requestID: "req-1"))
        let captured = try XCTUnwrap(scratch.takeAll().first)

        let home = LoopReturns()
        XCTAssertTrue(pipeline.captures.offer(captured, home: home))
        XCTAssertTrue(inPlace.built.offer(BuiltTrace(output: .line(Array("{}\n".utf8)), route: UpstreamRoute(index: 0)), home: home))
        let services = ServiceGroup(services: pipeline.services(logger: logger), logger: logger)
        await services.triggerGracefulShutdown()
        try await services.run()  // the builder drains once more as it stops

        let lines = try String(contentsOfFile: settings.traceFile!, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 2, "both written")
        XCTAssertEqual(home.count, 2, "both back with their loop, to be freed there")
        home.close()
        XCTAssertEqual(home.count, 0)
    }

    /// A trace built on an event loop that found the queue of built traces full is lost, so it is
    /// counted as dropped both in the metrics and in the figure logged at exit.
    func testBuiltTracesRefusedByAFullQueueAreCountedAsDroppedBeforeExport() async throws {
        let directory = try makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var settings = Self.traceFileSettings(in: directory)
        settings.captureQueueSize = 1
        let messages = NIOLockedValueBox<[(String, Logger.Metadata)]>([])
        let logger = Logger(label: "test") { _ in RecordingLogHandler(messages: messages) }
        let metrics = TracegateMetrics()
        let pipeline = try XCTUnwrap(try TracingPipeline(settings: settings, metrics: metrics, logger: logger))
        let inPlace = try XCTUnwrap(pipeline.inPlace, "a trace file without chain: sessions builds in place")

        pipeline.captures.refuse()
        inPlace.built.refuse()
        XCTAssertEqual(pipeline.droppedBeforeExport, 2)
        let services = ServiceGroup(services: pipeline.services(logger: logger), logger: logger)
        await services.triggerGracefulShutdown()
        try await services.run()

        let finished = messages.withLockedValue { $0 }.first { $0.0 == "trace capture finished" }
        XCTAssertEqual(finished?.1["dropped_before_export"]?.description, "2")
        let exposition = String(decoding: metrics.exposition(), as: UTF8.self)
        XCTAssertTrue(exposition.contains("tracegate_traces_dropped_total 2"), exposition)
    }
}
