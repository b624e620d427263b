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
        XCTAssertEqual(table.route(for: "/v1/chat", host: "x"), .configured(0))
        XCTAssertEqual(table.route(for: "/v1/chat/completions?stream=1", host: "x"), .configured(0), "its host rule does not match")
        XCTAssertEqual(table.route(for: "/v1/chat/completions", host: "api.example.com:8443"), .configured(1))
        XCTAssertEqual(table.route(for: "/v1/chatbot", host: "x"), .configured(2), "not /v1/chat: mid-segment")
        XCTAssertEqual(table.route(for: "/v1/models", host: nil), .configured(2))
        XCTAssertEqual(table.route(for: "/healthz", host: "x"), .defaultUpstream, "no route: the default upstream")
    }

    func testHostRulesCompareNamesWithoutPortOrCase() {
        XCTAssertEqual(table.route(for: "/admin/users", host: "Internal:80"), .configured(3))
        XCTAssertEqual(table.route(for: "/admin/users", host: "other"), .defaultUpstream)
        XCTAssertEqual(table.route(for: "/admin", host: nil), .defaultUpstream)
        XCTAssertEqual(RouteTable.hostName("[::1]:8080"), "[::1]")
    }

    func testNoRulesMeansTheDefault() {
        XCTAssertEqual(RouteTable([]).route(for: "/anything", host: "h"), .defaultUpstream)
    }
}
