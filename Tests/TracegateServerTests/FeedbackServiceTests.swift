import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import XCTest

@testable import TracegateExport
@testable import TracegateServer
@testable import TracegateTrace

private struct NoServer: AssessmentSink {
    func createAssessment(traceID: String, body: [UInt8]) async throws { throw MLflowError.unreachable("not in this test") }
    func traceInfo(traceID: String) async throws -> [UInt8] { throw MLflowError.unreachable("not in this test") }
}

final class FeedbackServiceTests: XCTestCase {
    private var directory = ""
    private var delivery: FeedbackDelivery!
    private var spool: DiskSpool<Feedback> { delivery.queued }

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "tracegate-feedback-service-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        delivery = try FeedbackDelivery(sink: NoServer(), directory: directory + "/feedback", logger: Logger(label: "test"))
    }

    override func tearDown() {
        delivery = nil
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func service(
        recent: [(String, String)] = [], inMLflow: [String: String] = [:], mlflowDown: Bool = false, rate: Int = 100,
        origins: [String] = [], identity: IdentityResolver = IdentityResolver(), grace: Duration = .milliseconds(20)
    ) -> FeedbackService {
        var index = RecentTraceIndex(capacity: 10)
        for (requestID, traceID) in recent { index.remember(requestID: requestID, traceID: traceID) }
        let lookup = FeedbackService.Lookup(
            traceExists: { id in
                if mlflowDown { throw MLflowError.unreachable("down") }
                return inMLflow.values.contains(id)
            },
            traceIDForRequestID: { requestID in
                if mlflowDown { throw MLflowError.unreachable("down") }
                return inMLflow[requestID]
            })
        return FeedbackService(
            recent: NIOLockedValueBox(index), delivery: delivery, lookup: lookup, identity: identity, cors: CORSPolicy(origins: origins),
            ratePerSecond: rate, builderGrace: grace)
    }

    private let traceA = "tr-" + String(repeating: "a", count: 32)
    private let traceB = "tr-" + String(repeating: "b", count: 32)

    private func post(_ service: FeedbackService, _ json: String, headers: [(String, String)] = []) async -> FeedbackAnswer {
        await service.answer(method: .POST, uri: "/_tracegate/feedback", headers: HTTPHeaders(headers), body: ByteBuffer(string: json))
    }

    func testARememberedRequestIDIsQueuedWithItsTraceAndTheUser() async throws {
        let service = service(recent: [("req-1", traceA)])
        let answer = await post(service, #"{"request_id":"req-1","name":"thumbs_up","value":true}"#, headers: [("X-User-ID", "alice")])
        XCTAssertEqual(answer.status, .accepted, answer.json)
        XCTAssertTrue(answer.json.contains(#""trace_id":"\#(traceA)""#))
        let queued = try XCTUnwrap(spool.peek(max: 10)?.records)
        XCTAssertEqual(queued.map(\.traceID), [traceA])
        XCTAssertEqual(queued.first?.user, "alice")
        XCTAssertEqual(queued.first?.valueJSON, "true")
    }

    func testWhatIsNotRememberedIsAskedOfMLflow() async {
        let service = service(inMLflow: ["req-old": traceB])
        let byRequest = await post(service, #"{"request_id":"req-old","name":"n","value":1}"#)
        XCTAssertEqual(byRequest.status, .accepted)
        XCTAssertTrue(byRequest.json.contains(traceB))
        let byTrace = await post(service, #"{"trace_id":"\#(traceB)","name":"n","value":1}"#)
        XCTAssertEqual(byTrace.status, .accepted)
        let unknown = await post(service, #"{"request_id":"req-none","name":"n","value":1}"#)
        XCTAssertEqual(unknown.status, .notFound)
        XCTAssertEqual(spool.recordCount, 2, "only what was accepted is queued")
    }

    func testARequestIDBuiltIntoATraceDuringTheGraceIsFound() async {
        let recent = NIOLockedValueBox(RecentTraceIndex(capacity: 10))
        let lookup = FeedbackService.Lookup(traceExists: { _ in false }, traceIDForRequestID: { _ in nil })
        let service = FeedbackService(
            recent: recent, delivery: delivery, lookup: lookup, identity: IdentityResolver(), cors: CORSPolicy(origins: []), ratePerSecond: 10,
            builderGrace: .seconds(2))
        let trace = traceA
        Task {
            try? await Task.sleep(for: .milliseconds(50))  // the builder gets to it a moment later
            recent.withLockedValue { $0.remember(requestID: "req-late", traceID: trace) }
        }
        let answer = await post(service, #"{"request_id":"req-late","name":"n","value":1}"#)
        XCTAssertEqual(answer.status, .accepted, answer.json)

        let other = traceB
        Task {
            try? await Task.sleep(for: .milliseconds(50))
            recent.withLockedValue { $0.remember(requestID: "req-later", traceID: other) }
        }
        let byTrace = await post(service, #"{"trace_id":"\#(traceB)","name":"n","value":1}"#)
        XCTAssertEqual(byTrace.status, .accepted, "a trace id from X-MLflow-Trace-Id, posted before the trace is built")
    }

    func testAnUnreachableTrackingServerIs503ButARememberedIDIsStillAccepted() async {
        let service = service(recent: [("req-1", traceA)], mlflowDown: true)
        let unknown = await post(service, #"{"request_id":"req-2","name":"n","value":1}"#)
        XCTAssertEqual(unknown.status, .serviceUnavailable)
        let known = await post(service, #"{"request_id":"req-1","name":"n","value":1}"#)
        XCTAssertEqual(known.status, .accepted)
    }

    func testMalformedFeedbackIs400WithTheReason() async {
        let answer = await post(service(), #"{"request_id":"r","name":"n"}"#)
        XCTAssertEqual(answer.status, .badRequest)
        XCTAssertTrue(answer.json.contains("value is required"), answer.json)
    }

    func testOnlyPostAndPreflightAreServed() async {
        let answer = await service().answer(method: .GET, uri: "/_tracegate/feedback", headers: [:], body: nil)
        XCTAssertEqual(answer.status, .methodNotAllowed)
        XCTAssertTrue(answer.headers.contains { $0 == ("Allow", "POST, OPTIONS") })
    }

    func testOriginsOutsideTheListAreRefusedAndListedOnesGetCORSHeaders() async {
        let service = service(recent: [("req-1", traceA)], origins: ["https://chat.example.com"])
        let foreign = await post(service, #"{"request_id":"req-1","name":"n","value":1}"#, headers: [("Origin", "https://evil.example")])
        XCTAssertEqual(foreign.status, .forbidden)
        let listed = await post(service, #"{"request_id":"req-1","name":"n","value":1}"#, headers: [("Origin", "https://CHAT.example.com")])
        XCTAssertEqual(listed.status, .accepted)
        XCTAssertTrue(listed.headers.contains { $0 == ("Access-Control-Allow-Origin", "https://CHAT.example.com") })
        let preflight = await service.answer(
            method: .OPTIONS, uri: "/_tracegate/feedback",
            headers: ["Origin": "https://chat.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, x-user-id"],
            body: nil)
        XCTAssertEqual(preflight.status, .noContent)
        XCTAssertTrue(preflight.headers.contains { $0 == ("Access-Control-Allow-Headers", "content-type, x-user-id") })
        XCTAssertTrue(preflight.headers.contains { $0 == ("Access-Control-Allow-Credentials", "true") })
        let wrongMethod = await service.answer(
            method: .OPTIONS, uri: "/_tracegate/feedback", headers: ["Origin": "https://chat.example.com", "Access-Control-Request-Method": "DELETE"],
            body: nil)
        XCTAssertEqual(wrongMethod.status, .forbidden)
    }

    func testAPageServedThroughTracegateMayPostFromItsOwnOrigin() async {
        let service = service(recent: [("req-1", traceA)])
        let same = await post(
            service, #"{"request_id":"req-1","name":"n","value":1}"#,
            headers: [("Origin", "https://chat.example.com"), ("X-Forwarded-Host", "chat.example.com"), ("X-Forwarded-Proto", "https")])
        XCTAssertEqual(same.status, .accepted, same.json)
        XCTAssertFalse(same.headers.contains { $0.0 == "Access-Control-Allow-Origin" }, "no CORS needed")
        let otherScheme = await post(
            service, #"{"request_id":"req-1","name":"n","value":1}"#,
            headers: [("Origin", "http://chat.example.com"), ("X-Forwarded-Host", "chat.example.com"), ("X-Forwarded-Proto", "https")])
        XCTAssertEqual(otherScheme.status, .forbidden)
    }

    func testBeyondTheRateLimitIs429() async {
        let service = service(recent: [("req-1", traceA)], rate: 2)
        var statuses: [UInt] = []
        for _ in 0..<6 { statuses.append(await post(service, #"{"request_id":"req-1","name":"n","value":1}"#).status.code) }
        XCTAssertEqual(statuses.filter { $0 == 202 }.count, 4, "a burst of twice the rate")
        XCTAssertEqual(statuses.suffix(2), [429, 429])
    }

    func testTheUserIsPseudonymisedLikeTracesAre() async throws {
        let identity = IdentityResolver(
            userSources: [.cookie("uid")], sessionSources: [], pseudonymiser: HMACSHA256(key: Array("0123456789abcdef".utf8)))
        let service = service(recent: [("req-1", traceA)], identity: identity)
        _ = await post(service, #"{"request_id":"req-1","name":"n","value":1}"#, headers: [("Cookie", "uid=bob@example.com")])
        XCTAssertEqual(spool.peek(max: 1)?.records.first?.user, HMACSHA256(key: Array("0123456789abcdef".utf8)).hex("bob@example.com"))
    }
}
