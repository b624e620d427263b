import Foundation
import XCTest

@testable import TracegateTrace

/// User and session chosen among their sources when the trace is built.
final class IdentityResolverTests: XCTestCase {
    private func exchange(
        target: String = "/v1/chat/completions", request: String = #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        response: String = #"{"id":"c1","object":"chat.completion","choices":[]}"#, user: IdentityHeadValues,
        session: IdentityHeadValues = []
    ) -> CapturedExchange {
        CapturedExchange(
            traceIDHigh: 1, traceIDLow: 2, rootSpanID: 3, method: "POST", target: target, upstream: "http://b:1",
            userHeadValues: user, sessionHeadValues: session, requestID: "r", requestIDWasGenerated: false, headerTags: [],
            request: .init(bytes: Array(request.utf8), totalSize: request.utf8.count, contentType: "application/json"),
            response: .init(bytes: Array(response.utf8), totalSize: response.utf8.count, contentType: "application/json"),
            status: 200, startEpochNanos: 1, durationNanos: 1, timeToFirstByteNanos: nil, timeToFirstEventNanos: nil, outcome: .completed)
    }

    private func builder(user: String, session: String = "", key: String? = nil) throws -> TraceBuilder {
        TraceBuilder(identity: IdentityResolver(
            userSources: try IdentitySource.parseList(user, forSessions: false),
            sessionSources: try IdentitySource.parseList(session, forSessions: true),
            pseudonymiser: key.map { HMACSHA256(key: Array($0.utf8)) }))
    }

    private func jwtPayload(_ json: String) -> String {
        Data(json.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
    }

    func testTheFirstSourceWithAValidValueWinsAndIsRecorded() throws {
        let build = try builder(user: "header:X-User-ID, jwt:sub, body:user")
        let fromJWT = build.record(for: exchange(user: [nil, jwtPayload(#"{"sub":"u-jwt"}"#)]))
        XCTAssertEqual(fromJWT.user, "u-jwt")
        XCTAssertEqual(fromJWT.attributes["tracegate.user.source"], .string("jwt:sub"))

        let fromHeader = build.record(for: exchange(user: ["u-header", jwtPayload(#"{"sub":"u-jwt"}"#)]))
        XCTAssertEqual(fromHeader.user, "u-header")
        XCTAssertEqual(fromHeader.attributes["tracegate.user.source"], .string("header:X-User-ID"))

        let fromBody = build.record(for: exchange(
            request: #"{"model":"m","user":"u-body","messages":[{"role":"user","content":"hi"}]}"#, user: ["  ", nil]))
        XCTAssertEqual(fromBody.user, "u-body", "a blank header is not a value")
        XCTAssertEqual(fromBody.attributes["tracegate.user.source"], .string("body:user"))
        XCTAssertNil(fromBody.attributes["tracegate.warnings"])
    }

    func testAValueWithControlCharactersIsPassedOverWithAWarningOnlyWhenNothingElseIsValid() throws {
        let build = try builder(user: "header:X-User-ID, body:metadata.user_id")
        let next = build.record(for: exchange(request: #"{"metadata":{"user_id":42}}"#, user: ["a\u{7}b"]))
        XCTAssertEqual(next.user, "42", "numbers are ids too")
        let none = build.record(for: exchange(request: "{}", user: ["a\u{7}b"]))
        XCTAssertNil(none.user)
        XCTAssertNil(none.attributes["tracegate.user.source"])
        XCTAssertEqual(none.attributes["tracegate.warnings"].map { "\($0)".contains("control character") }, true)
    }

    func testAConversationObjectStandsForItsID() throws {
        let build = try builder(user: "", session: "body:conversation")
        let asObject = build.record(for: exchange(request: #"{"model":"m","input":"hi","conversation":{"id":"conv_7"}}"#, user: [], session: []))
        let asString = build.record(for: exchange(request: #"{"model":"m","input":"hi","conversation":"conv_7"}"#, user: [], session: []))
        XCTAssertEqual([asObject.session, asString.session], ["conv_7", "conv_7"])
    }

    func testAbsentEverywhereMeansNoUser() throws {
        let record = try builder(user: "cookie:uid, body:user").record(for: exchange(user: [nil]))
        XCTAssertNil(record.user)
        XCTAssertNil(record.attributes["tracegate.user.source"])
    }

    func testPseudonymsGroupTheSameValueAndHideIt() throws {
        let build = try builder(user: "header:X-User-ID", session: "header:X-Session-ID", key: "0123456789abcdef0123")
        let a = build.record(for: exchange(user: ["alice@example.com"], session: ["s1"]))
        let b = build.record(for: exchange(user: [" alice@example.com "], session: ["s1"]))
        let c = build.record(for: exchange(user: ["bob@example.com"], session: ["s1"]))
        XCTAssertEqual(a.user, HMACSHA256(key: Array("0123456789abcdef0123".utf8)).hex("alice@example.com"))
        XCTAssertEqual(a.user?.count, 64)
        XCTAssertEqual(a.user, b.user, "trimmed before hashing")
        XCTAssertNotEqual(a.user, c.user)
        XCTAssertEqual(a.session, HMACSHA256(key: Array("0123456789abcdef0123".utf8)).hex("s1"))
        let line = String(decoding: TraceRecordJSON.line(a), as: UTF8.self)
        XCTAssertFalse(line.contains("alice"), "the clear id is nowhere in the trace")
    }

    func testABodyFieldRedactedFromTheTraceStillGivesThePseudonymisedUser() throws {
        var build = try builder(user: "body:user", key: "0123456789abcdef0123")
        build.redaction = Redaction(jsonPaths: ["user"], patterns: [])
        let record = build.record(for: exchange(
            request: #"{"model":"m","user":"alice@example.com","messages":[{"role":"user","content":"hi"}]}"#, user: []))
        XCTAssertEqual(record.user, HMACSHA256(key: Array("0123456789abcdef0123".utf8)).hex("alice@example.com"))
        XCTAssertFalse(String(decoding: TraceRecordJSON.line(record), as: UTF8.self).contains("alice"))
    }

    // MARK: Responses API chains

    private func turn(_ id: String, previous: String?, sessionHeader: String? = nil) -> CapturedExchange {
        let continued = previous.map { #","previous_response_id":"\#($0)""# } ?? ""
        return exchange(
            target: "/v1/responses", request: #"{"model":"m","input":"hi"\#(continued)}"#,
            response: #"{"id":"\#(id)","object":"response","output":[]}"#, user: [], session: [sessionHeader])
    }

    func testTurnsContinuingAResponseJoinTheFirstTurnsSession() throws {
        let build = try builder(user: "", session: "header:X-Session-ID, chain:previous_response_id")
        var chain = ResponseSessionChain(capacity: 10)
        let first = build.record(for: turn("resp_1", previous: nil), chain: &chain)
        let second = build.record(for: turn("resp_2", previous: "resp_1"), chain: &chain)
        let third = build.record(for: turn("resp_3", previous: "resp_2"), chain: &chain)
        XCTAssertEqual([first.session, second.session, third.session], ["resp_1", "resp_1", "resp_1"])
        XCTAssertEqual(third.attributes["tracegate.session.source"], .string("chain:previous_response_id"))

        let other = build.record(for: turn("resp_9", previous: nil), chain: &chain)
        XCTAssertEqual(other.session, "resp_9", "a new conversation is a new session")
    }

    func testAnEarlierSourceWinsAndTheChainCarriesItOn() throws {
        let build = try builder(user: "", session: "header:X-Session-ID, chain:previous_response_id")
        var chain = ResponseSessionChain(capacity: 10)
        XCTAssertEqual(build.record(for: turn("resp_1", previous: nil, sessionHeader: "conv-7"), chain: &chain).session, "conv-7")
        let next = build.record(for: turn("resp_2", previous: "resp_1"), chain: &chain)
        XCTAssertEqual(next.session, "conv-7", "a later turn without the header stays in the session")
    }

    func testAContinuedResponseNeverSeenStartsASessionNamedAfterIt() throws {
        let build = try builder(user: "", session: "chain:previous_response_id")
        var chain = ResponseSessionChain(capacity: 10)
        let afterRestart = build.record(for: turn("resp_5", previous: "resp_4"), chain: &chain)
        XCTAssertEqual(afterRestart.session, "resp_4")
        XCTAssertEqual(build.record(for: turn("resp_6", previous: "resp_5"), chain: &chain).session, "resp_4")
    }

    func testAChainedSessionIsPseudonymisedOnceAndRemembersOnlyWhatWasExported() throws {
        let build = try builder(user: "", session: "header:X-Session-ID, chain:previous_response_id", key: "0123456789abcdef0123")
        var chain = ResponseSessionChain(capacity: 10)
        let first = build.record(for: turn("resp_1", previous: nil, sessionHeader: "conv-7"), chain: &chain)
        let second = build.record(for: turn("resp_2", previous: "resp_1"), chain: &chain)
        XCTAssertEqual(first.session, HMACSHA256(key: Array("0123456789abcdef0123".utf8)).hex("conv-7"))
        XCTAssertEqual(second.session, first.session, "not hashed a second time")

        let huge = String(repeating: "s", count: 30_000)
        let plain = try builder(user: "", session: "header:X-Session-ID, chain:previous_response_id")
        let long = plain.record(for: turn("resp_3", previous: nil, sessionHeader: huge), chain: &chain)
        XCTAssertEqual(chain.session(continuing: "resp_3"), long.session)
        XCTAssertLessThanOrEqual(chain.session(continuing: "resp_3")?.count ?? .max, 250, "the chain holds the shortened id")
    }

    func testQueryParametersUsedAsIdsAreRedactedFromTheURLWhenPseudonymised() throws {
        let hashed = try builder(user: "query:uid", key: "0123456789abcdef0123")
        let record = hashed.record(for: exchange(target: "/v1/chat/completions?uid=alice%40example.com&v=2", user: ["alice@example.com"]))
        XCTAssertEqual(record.attributes[TraceAttributeKey.urlPath], .string("/v1/chat/completions?uid=[REDACTED]&v=2"))
        let clear = try builder(user: "query:uid")
        XCTAssertEqual(
            clear.record(for: exchange(target: "/x?uid=alice", user: ["alice"])).attributes[TraceAttributeKey.urlPath], .string("/x?uid=alice"),
            "without pseudonyms the id is exported anyway")
    }

    func testWithoutTheChainSourceNothingIsRemembered() throws {
        var chain = ResponseSessionChain(capacity: 10)
        _ = try builder(user: "", session: "header:X-Session-ID").record(for: turn("resp_1", previous: nil, sessionHeader: "s"), chain: &chain)
        XCTAssertEqual(chain.count, 0)
    }
}
