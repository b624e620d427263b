import Foundation
import Logging
import NIOConcurrencyHelpers
import XCTest

@testable import TracegateExport
@testable import TracegateTrace

/// A tracking server in memory: traces appear when told, assessments are stored, failures on demand.
private final class FakeAssessments: AssessmentSink, @unchecked Sendable {
    struct State {
        var traces: Set<String> = []
        var assessments: [String: [[UInt8]]] = [:]
        var down = false
        /// The next POSTs are stored, then answered with a timeout (an ambiguous failure).
        var loseAnswers = 0
        var refuse = false
        var unauthorized = false
    }
    let state = NIOLockedValueBox(State())

    func createAssessment(traceID: String, body: [UInt8]) async throws {
        try state.withLockedValue { state in
            if state.down { throw MLflowError.unreachable("connection refused") }
            if state.refuse { throw MLflowError.rejected(status: 400, body: "INVALID_PARAMETER_VALUE") }
            if state.unauthorized { throw MLflowError.rejected(status: 403, body: "PERMISSION_DENIED") }
            guard state.traces.contains(traceID) else { throw MLflowError.rejected(status: 404, body: "RESOURCE_DOES_NOT_EXIST") }
            state.assessments[traceID, default: []].append(body)
            if state.loseAnswers > 0 {
                state.loseAnswers -= 1
                throw MLflowError.unreachable("read timed out")
            }
        }
    }

    func traceInfo(traceID: String) async throws -> [UInt8] {
        try state.withLockedValue { state in
            if state.down { throw MLflowError.unreachable("connection refused") }
            guard state.traces.contains(traceID) else { throw MLflowError.rejected(status: 404, body: "RESOURCE_DOES_NOT_EXIST") }
            let listed = (state.assessments[traceID] ?? []).compactMap { body -> String? in
                guard let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return nil }
                return (try? JSONSerialization.data(withJSONObject: json["assessment"] ?? [:])).map { String(decoding: $0, as: UTF8.self) }
            }
            return Array(#"{"trace":{"trace_info":{"trace_id":"\#(traceID)","assessments":[\#(listed.joined(separator: ","))]}}}"#.utf8)
        }
    }

    func count(_ traceID: String) -> Int { state.withLockedValue { $0.assessments[traceID]?.count ?? 0 } }
}

final class FeedbackDeliveryTests: XCTestCase {
    private var directory = ""

    override func setUp() {
        directory = NSTemporaryDirectory() + "tracegate-feedback-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: directory) }

    /// Fast pauses for tests, then `adjust`.
    private func delivery(
        _ sink: FakeAssessments, _ adjust: (inout FeedbackDelivery.Configuration) -> Void = { _ in }
    ) throws -> FeedbackDelivery {
        var configuration = FeedbackDelivery.Configuration()
        configuration.initialBackoff = .milliseconds(5)
        configuration.maxBackoff = .milliseconds(20)
        configuration.maxTraceWait = .milliseconds(20)
        configuration.traceWaitLimit = .seconds(3600)
        adjust(&configuration)
        return try FeedbackDelivery(configuration: configuration, sink: sink, directory: directory + "/feedback", logger: Logger(label: "test"))
    }

    private func feedback(_ n: Int, trace: String? = nil) -> Feedback {
        Feedback(
            id: "fb-\(n)", traceID: trace ?? "tr-\(n)", name: "thumbs_up", valueJSON: "true", user: "u", createdMillis: FeedbackDelivery.nowMillis())
    }

    private func waitUntil(_ condition: () -> Bool, seconds: Double = 10) async {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !condition() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
    }

    func testFeedbackWaitsForItsTraceWithoutHoldingBackTheOthers() async throws {
        let sink = FakeAssessments()
        sink.state.withLockedValue { $0.traces = ["tr-2"] }
        let delivery = try delivery(sink)
        let run = Task { await delivery.run() }
        try delivery.submit(feedback(1))
        try delivery.submit(feedback(2))
        await waitUntil { sink.count("tr-2") == 1 }
        XCTAssertEqual(sink.count("tr-2"), 1, "the second is not held back by the first")
        XCTAssertEqual(sink.count("tr-1"), 0)
        sink.state.withLockedValue { _ = $0.traces.insert("tr-1") }  // its trace is exported now
        await waitUntil { sink.count("tr-1") == 1 }
        delivery.stop()
        await run.value
        XCTAssertEqual([sink.count("tr-1"), sink.count("tr-2")], [1, 1])
        XCTAssertGreaterThan(delivery.stats.waitedForTrace, 0)
        XCTAssertEqual(delivery.pending, 0)
    }

    func testAnAnswerLostAfterTheServerStoredItDoesNotMakeADuplicate() async throws {
        let sink = FakeAssessments()
        sink.state.withLockedValue {
            $0.traces = ["tr-1"]
            $0.loseAnswers = 1
        }
        let delivery = try delivery(sink)
        let run = Task { await delivery.run() }
        try delivery.submit(feedback(1))
        await waitUntil { delivery.stats.delivered == 1 }
        delivery.stop()
        await run.value
        XCTAssertEqual(sink.count("tr-1"), 1)
        XCTAssertEqual(delivery.stats.retries, 1)
    }

    func testAnOutageAndARestartLoseNothingAndDuplicateNothing() async throws {
        let sink = FakeAssessments()
        sink.state.withLockedValue {
            $0.traces = ["tr-1", "tr-2", "tr-3"]
            $0.down = true
        }
        try await deliverWhileDown(sink)  // the process ends with everything still queued

        sink.state.withLockedValue { $0.down = false }
        let second = try delivery(sink)
        XCTAssertEqual(second.pending, 3, "queued on disk")
        let rerun = Task { await second.run() }
        await waitUntil { second.stats.delivered == 3 }
        second.stop()
        await rerun.value
        XCTAssertEqual([sink.count("tr-1"), sink.count("tr-2"), sink.count("tr-3")], [1, 1, 1])
    }

    private func deliverWhileDown(_ sink: FakeAssessments) async throws {
        let first = try delivery(sink)
        let run = Task { await first.run() }
        for n in 1...3 { try first.submit(feedback(n)) }
        try await Task.sleep(for: .milliseconds(50))
        first.stop()
        await run.value
    }

    func testAFeedbackMLflowRefusesIsSetAsideWithTheReason() async throws {
        let sink = FakeAssessments()
        sink.state.withLockedValue {
            $0.traces = ["tr-1"]
            $0.refuse = true
        }
        let delivery = try delivery(sink)
        let run = Task { await delivery.run() }
        try delivery.submit(feedback(1))
        await waitUntil { delivery.stats.rejected == 1 }
        delivery.stop()
        await run.value
        let lines = try String(contentsOfFile: directory + "/feedback/dead-letter.jsonl", encoding: .utf8)
        XCTAssertTrue(lines.contains("INVALID_PARAMETER_VALUE") && lines.contains(#""id":"fb-1""#), lines)
        XCTAssertEqual(delivery.pending, 0)
    }

    func testAFeedbackWhoseTraceNeverArrivesIsSetAsideAfterTheLimit() async throws {
        let sink = FakeAssessments()
        let delivery = try delivery(sink) { $0.traceWaitLimit = .milliseconds(100) }
        let run = Task { await delivery.run() }
        try delivery.submit(feedback(1))
        await waitUntil { delivery.stats.rejected == 1 }
        delivery.stop()
        await run.value
        XCTAssertEqual(delivery.stats.rejected, 1)
        XCTAssertTrue(try String(contentsOfFile: directory + "/feedback/dead-letter.jsonl", encoding: .utf8).contains("MLflow never had trace tr-1"))
    }

    func testManyFeedbacksWaitingForTracesCostFewTries() async throws {
        let sink = FakeAssessments()
        let delivery = try delivery(sink) {
            $0.initialBackoff = .milliseconds(100)
            $0.maxTraceWait = .milliseconds(400)
        }
        let run = Task { await delivery.run() }
        for n in 1...20 { try delivery.submit(feedback(n)) }
        try await Task.sleep(for: .seconds(1))
        let waited = delivery.stats.waitedForTrace
        sink.state.withLockedValue { $0.traces = Set((1...20).map { "tr-\($0)" }) }
        await waitUntil { delivery.stats.delivered == 20 }
        delivery.stop()
        await run.value
        XCTAssertEqual(delivery.stats.delivered, 20)
        // Pauses of 200, 400, 400 ms: about 3 tries each in the first second, not a busy loop.
        XCTAssertLessThanOrEqual(waited, 20 * 5, "tries while waiting for traces")
        XCTAssertGreaterThanOrEqual(waited, 20)
    }

    func testRefusedCredentialsKeepTheFeedbackUntilTheyAreFixed() async throws {
        let sink = FakeAssessments()
        sink.state.withLockedValue {
            $0.traces = ["tr-1"]
            $0.unauthorized = true
        }
        let delivery = try delivery(sink)
        let run = Task { await delivery.run() }
        try delivery.submit(feedback(1))
        await waitUntil { delivery.stats.retries >= 2 }
        XCTAssertEqual(delivery.stats.rejected, 0)
        sink.state.withLockedValue { $0.unauthorized = false }
        await waitUntil { delivery.stats.delivered == 1 }
        delivery.stop()
        await run.value
        XCTAssertEqual(sink.count("tr-1"), 1)
    }

    func testAFullQueueRefusesNewFeedbackInsteadOfDroppingAcceptedFeedback() throws {
        let delivery = try delivery(FakeAssessments()) { $0.maxSpoolBytes = FeedbackDelivery.maxRecordBytes + 4096 }
        var accepted = 0
        var refused = false
        for n in 1...100 {
            do {
                try delivery.submit(feedback(n))
                accepted += 1
            } catch {
                refused = true
                break
            }
        }
        XCTAssertTrue(refused)
        XCTAssertEqual(delivery.pending, accepted, "nothing accepted was dropped")
    }

    func testStopEndsABackoffAtOnce() async throws {
        let sink = FakeAssessments()
        sink.state.withLockedValue { $0.down = true }
        let delivery = try delivery(sink) { $0.initialBackoff = .seconds(30) }
        let run = Task { await delivery.run() }
        try delivery.submit(feedback(1))
        await waitUntil { delivery.stats.retries == 1 }
        try await Task.sleep(for: .milliseconds(50))
        let stopping = ContinuousClock.now
        delivery.stop()
        await run.value
        XCTAssertLessThan(ContinuousClock.now - stopping, .seconds(2))
        XCTAssertEqual(delivery.pending, 1, "still queued for the next run")
    }
}
