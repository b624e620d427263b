import XCTest

@testable import TracegateTrace

final class FeedbackTests: XCTestCase {
    private func parse(_ text: String) -> Result<FeedbackRequest, FeedbackRejection> { FeedbackRequest.parse(Array(text.utf8)) }

    func testAWellFormedPostIsRead() throws {
        let request = try parse(#"{"request_id":"req-1","name":"thumbs_up","value":true,"rationale":"clear","metadata":{"page":"chat"}}"#).get()
        XCTAssertEqual(request.exchange, .requestID("req-1"))
        XCTAssertEqual(request.name, "thumbs_up")
        XCTAssertEqual(request.valueJSON, "true")
        XCTAssertEqual(request.rationale, "clear")
        XCTAssertEqual(request.metadata, ["page": "chat"])

        let byTrace = try parse(#"{"trace_id":"0123456789ABCDEF0123456789abcdef","name":"score","value":{"stars":4,"tags":["fast"]}}"#).get()
        XCTAssertEqual(byTrace.exchange, .traceID("tr-0123456789abcdef0123456789abcdef"))
        XCTAssertEqual(byTrace.valueJSON, #"{"stars":4,"tags":["fast"]}"#)
    }

    func testEachProblemIsNamed() {
        let cases: [(String, String)] = [
            ("[1]", "the body must be a JSON object"),
            ("{not json", "the body must be a JSON object"),
            (#"{"name":"n","value":1}"#, "name the exchange with request_id"),
            (#"{"trace_id":"tr-123","name":"n","value":1}"#, "trace_id must be tr- followed by 32 hex digits"),
            (#"{"trace_id":"tr-0123456789abcdef0123456789abcde１","name":"n","value":1}"#, "trace_id must be tr- followed by 32 hex digits"),
            (#"{"request_id":"","name":"n","value":1}"#, "request_id must be a non-empty string"),
            (#"{"request_id":"a\u0007","name":"n","value":1}"#, "request_id must be a non-empty string without control characters"),
            (#"{"request_id":"r","value":1}"#, "name must be a string of 1 to 250 characters"),
            (#"{"request_id":"r","name":"n"}"#, "value is required"),
            (#"{"request_id":"r","name":"n","value":null}"#, "value is required"),
            (#"{"request_id":"r","name":"n","value":1,"rationale":5}"#, "rationale must be a string"),
            (#"{"request_id":"r","name":"n","value":1,"metadata":{"a":1}}"#, "metadata must map names"),
            (#"{"request_id":"r","name":"n","value":1,"metadata":{"tracegate.feedback_id":"x"}}"#, "metadata must map names"),
        ]
        for (body, expected) in cases {
            switch parse(body) {
            case .success(let request): XCTFail("\(body) was accepted: \(request)")
            case .failure(let rejection): XCTAssertTrue(rejection.description.hasPrefix(expected), "\(body): \(rejection)")
            }
        }
    }

    func testTheAssessmentIsAHumanFeedbackCarryingItsID() throws {
        let feedback = Feedback(
            id: "fb-1", traceID: "tr-0123456789abcdef0123456789abcdef", name: "thumbs_up", valueJSON: #"{"stars":4}"#, rationale: "ok",
            metadata: ["page": "chat"], user: "alice", createdMillis: 1)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(feedback.createAssessmentJSON)) as? [String: Any])
        let assessment = try XCTUnwrap(json["assessment"] as? [String: Any])
        XCTAssertEqual(assessment["assessment_name"] as? String, "thumbs_up")
        XCTAssertEqual(assessment["trace_id"] as? String, "tr-0123456789abcdef0123456789abcdef")
        XCTAssertEqual(assessment["source"] as? [String: String], ["source_type": "HUMAN", "source_id": "alice"])
        XCTAssertEqual((assessment["feedback"] as? [String: Any])?["value"] as? [String: Int], ["stars": 4])
        XCTAssertEqual(assessment["rationale"] as? String, "ok")
        XCTAssertEqual(assessment["metadata"] as? [String: String], ["page": "chat", "tracegate.feedback_id": "fb-1"])

        var anonymous = feedback
        anonymous.user = nil
        let source = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(anonymous.createAssessmentJSON)) as? [String: Any])
        XCTAssertEqual((source["assessment"] as? [String: Any])?["source"] as? [String: String], ["source_type": "HUMAN"])
    }

    func testTheExperimentOfATraceIsRead() {
        let info = #"{"trace":{"trace_info":{"trace_id":"tr-1","trace_location":{"type":"MLFLOW_EXPERIMENT","mlflow_experiment":{"experiment_id":"42"}}}}}"#
        XCTAssertEqual(Feedback.experimentID(inTraceInfo: Array(info.utf8)), "42")
        XCTAssertNil(Feedback.experimentID(inTraceInfo: Array(#"{"trace":{}}"#.utf8)))
    }

    func testAFeedbackIsFoundAmongATracesAssessmentsByItsID() {
        let feedback = Feedback(id: "fb-1", traceID: "tr-1", name: "n", valueJSON: "1", createdMillis: 1)
        let listed = #"{"trace":{"trace_info":{"assessments":[{"metadata":{"tracegate.feedback_id":"fb-0"}},{"metadata":{"tracegate.feedback_id":"fb-1"}}]}}}"#
        XCTAssertTrue(feedback.isListed(inTraceInfo: Array(listed.utf8)))
        XCTAssertFalse(feedback.isListed(inTraceInfo: Array(#"{"trace":{"trace_info":{"assessments":[{"metadata":{}}]}}}"#.utf8)))
        XCTAssertFalse(feedback.isListed(inTraceInfo: Array(#"{"trace":{"trace_info":{}}}"#.utf8)))
    }
}
