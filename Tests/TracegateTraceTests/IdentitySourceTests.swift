import XCTest

@testable import TracegateTrace

/// `user_from` / `session_from` entries, and reading them from a request head.
final class IdentitySourceTests: XCTestCase {
    func testEveryKindParsesAndPrintsBack() throws {
        let text = "header:X-User-ID, cookie:uid, query:user, jwt:sub, jwt:auth/email, jwt:https://example.com/user_id, body:metadata.user_id, baggage:user.id"
        let sources = try IdentitySource.parseList(text, forSessions: false)
        XCTAssertEqual(sources, [
            .header("X-User-ID"), .cookie("uid"), .query("user"), .jwt(claim: "sub", cookie: nil), .jwt(claim: "email", cookie: "auth"),
            .jwt(claim: "https://example.com/user_id", cookie: nil), .body(["metadata", "user_id"]), .baggage("user.id"),
        ])
        XCTAssertEqual(sources.map(\.description).joined(separator: ", "), text)
        XCTAssertEqual(try IdentitySource.parseList("chain:previous_response_id", forSessions: true), [.responseChain])
        XCTAssertEqual(try IdentitySource.parseList("", forSessions: true), [])
    }

    func testBadEntriesSayWhatIsWrong() {
        let cases: [(String, Bool, String)] = [
            ("X-User-ID", false, "'X-User-ID' has no KIND: prefix"),
            ("head:X", false, "'head' is not a kind of source"),
            ("header:", false, "'header:': the header name must be a non-empty name"),
            ("cookie:a b", false, "'cookie:a b': the cookie name must be"),
            ("body:a..b", false, "'body:a..b': expected a dotted JSON path"),
            ("jwt:", false, "'jwt:' names no claim"),
            ("jwt:auth/", false, "'jwt:auth/' names no claim after the cookie"),
            ("chain:previous_response_id", false, "gives sessions only"),
            ("chain:conversation", true, "the only chain is chain:previous_response_id"),
            ("jwt:sub, jwt:sub", false, "'jwt:sub' is listed twice"),
        ]
        for (text, forSessions, expected) in cases {
            XCTAssertThrowsError(try IdentitySource.parseList(text, forSessions: forSessions), text) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(error) should contain \(expected)")
            }
        }
    }

    private func read(_ source: IdentitySource, _ headers: [String: String], target: String = "/v1/chat/completions") -> String? {
        IdentityHeadReader.read(source, header: { headers[$0.lowercased()] }, target: target)
    }

    func testHeadSourcesReadTheirValues() {
        XCTAssertEqual(read(.header("X-User-ID"), ["x-user-id": "alice"]), "alice")
        XCTAssertEqual(read(.cookie("uid"), ["cookie": "theme=dark; uid=\"bob\" ;x=1"]), "bob")
        XCTAssertNil(read(.cookie("id"), ["cookie": "uid=bob"]), "a cookie is matched by its whole name")
        XCTAssertEqual(read(.query("user"), [:], target: "/chat?a=1&user=carol%40example.com+x"), "carol@example.com x")
        XCTAssertNil(read(.query("user"), [:], target: "/chat"))
        XCTAssertEqual(read(.baggage("user.id"), ["baggage": "tenant=t1, user.id = dave%20d;ttl=5,session.id=s"]), "dave d")
        XCTAssertNil(read(.responseChain, [:]))
        XCTAssertNil(read(.body(["user"]), [:]))
    }

    func testAJWTIsReducedToItsPayloadSegmentSoTheTokenIsNeverKept() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTQyIn0.c2lnbmF0dXJl"
        XCTAssertEqual(read(.jwt(claim: "sub", cookie: nil), ["authorization": "Bearer \(token)"]), "eyJzdWIiOiJ1LTQyIn0")
        XCTAssertEqual(read(.jwt(claim: "sub", cookie: nil), ["authorization": "bearer  \(token)"]), "eyJzdWIiOiJ1LTQyIn0")
        XCTAssertEqual(read(.jwt(claim: "sub", cookie: "auth"), ["cookie": "auth=\(token)"]), "eyJzdWIiOiJ1LTQyIn0")
        XCTAssertNil(read(.jwt(claim: "sub", cookie: nil), ["authorization": "Basic dTpw"]))
        XCTAssertNil(read(.jwt(claim: "sub", cookie: nil), ["authorization": "Bearer sk-not-a-jwt"]))
    }

    func testClaimsDecodeFromBase64URLWithoutPadding() {
        // {"sub":"u-42","n":7,"o":{"a":1},"https://x.io/uid":"ü?"} — base64url, '-' and '_' included, no padding.
        let json = #"{"sub":"u-42","n":7,"o":{"a":1},"https://x.io/uid":"ü?>"}"#
        let segment = Data(json.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        XCTAssertEqual(IdentityResolver.claim("sub", inPayload: segment), "u-42")
        XCTAssertEqual(IdentityResolver.claim("n", inPayload: segment), "7")
        XCTAssertEqual(IdentityResolver.claim("https://x.io/uid", inPayload: segment), "ü?>")
        XCTAssertNil(IdentityResolver.claim("o", inPayload: segment), "objects are not ids")
        XCTAssertNil(IdentityResolver.claim("sub", inPayload: "%%%"))
    }
}
