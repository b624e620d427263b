import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import XCTest

@testable import TracegateConfig
@testable import TracegateServer

final class TracingPipelineTests: XCTestCase {
    /// A trace built on an event loop that found the queue of built traces full is lost, so it is
    /// counted as dropped both in the metrics and in the figure logged at exit.
    func testBuiltTracesRefusedByAFullQueueAreCountedAsDroppedBeforeExport() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var settings = TracegateSettings()
        settings.traceFile = directory + "/traces.jsonl"
        settings.traceFileMaxBytes = 1 << 20
        settings.traceFileKeep = 1
        settings.captureQueueSize = 1
        settings.capture = .full
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
