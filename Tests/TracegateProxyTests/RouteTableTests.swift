import XCTest

@testable import TracegateProxy

final class RouteTableTests: XCTestCase {
    private let table = RouteTable([
        .init(pathPrefix: "/v1/chat"),
        .init(pathPrefix: "/v1/chat/completions", host: "API.example.com"),
        .init(pathPrefix: "/v1/"),
        .init(pathPrefix: "/admin", host: "internal"),
    ])

    func testTheLongestMatchingPrefixWinsAtASegmentBoundary() {
        XCTAssertEqual(table.target(for: "/v1/chat", host: "x"), 1)
        XCTAssertEqual(table.target(for: "/v1/chat/completions?stream=1", host: "x"), 1, "its host rule does not match")
        XCTAssertEqual(table.target(for: "/v1/chat/completions", host: "api.example.com:8443"), 2)
        XCTAssertEqual(table.target(for: "/v1/chatbot", host: "x"), 3, "not /v1/chat: mid-segment")
        XCTAssertEqual(table.target(for: "/v1/models", host: nil), 3)
        XCTAssertEqual(table.target(for: "/healthz", host: "x"), 0, "no route: the default upstream")
    }

    func testHostRulesCompareNamesWithoutPortOrCase() {
        XCTAssertEqual(table.target(for: "/admin/users", host: "Internal:80"), 4)
        XCTAssertEqual(table.target(for: "/admin/users", host: "other"), 0)
        XCTAssertEqual(table.target(for: "/admin", host: nil), 0)
        XCTAssertEqual(RouteTable.hostName("[::1]:8080"), "[::1]")
    }

    func testNoRulesMeansTheDefault() {
        XCTAssertEqual(RouteTable([]).target(for: "/anything", host: "h"), 0)
    }
}
