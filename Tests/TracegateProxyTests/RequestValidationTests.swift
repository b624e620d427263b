import NIOCore
import NIOHTTP1
import XCTest

@testable import TracegateProxy

final class RequestValidationTests: XCTestCase {
    private func validate(
        _ headers: [(String, String)], limit: Int? = 1000, method: HTTPMethod = .POST, host: [(String, String)] = [("Host", "x")]
    ) -> ProxyError? {
        ClientConnectionHandler.validate(
            try! Wire.requestHead(HTTPRequestHead(version: .http1_1, method: method, uri: "/", headers: HTTPHeaders(host + headers))),
            maxBodyBytes: limit)
    }

    func testHTTP11RequestsNeedExactlyOneHost() {
        XCTAssertEqual(validate([], host: []), .malformedRequest("HTTP/1.1 request without a Host header"))
        XCTAssertEqual(validate([], host: [("Host", "a"), ("host", "b")]), .malformedRequest("more than one Host header"))
        XCTAssertNil(validate([]))
    }

    func testConnectIsRefusedWith501() {
        XCTAssertEqual(validate([], method: .CONNECT), .connectNotSupported)
        XCTAssertEqual(ProxyError.connectNotSupported.status.code, 501)
    }

    func testContentLengthWithTransferEncodingIsRefused() {
        XCTAssertEqual(
            validate([("Content-Length", "5"), ("Transfer-Encoding", "chunked")]),
            .malformedRequest("both Content-Length and Transfer-Encoding"))
    }

    func testConflictingContentLengthsAreRefused() {
        XCTAssertEqual(validate([("Content-Length", "5"), ("Content-Length", "6")]), .malformedRequest("conflicting Content-Length values"))
        XCTAssertEqual(validate([("Content-Length", "5, 6")]), .malformedRequest("conflicting Content-Length values"))
        XCTAssertEqual(
            validate([("Content-Length", "5"), ("Content-Length", "5")]), .malformedRequest("more than one Content-Length value"))
    }

    func testMalformedLengthsAndUnsupportedCodingsAreRefused() {
        XCTAssertEqual(validate([("Content-Length", "5x")]), .malformedRequest("invalid Content-Length"))
        XCTAssertEqual(validate([("Content-Length", "")]), .malformedRequest("invalid Content-Length"))
        XCTAssertEqual(validate([("Content-Length", "-1")]), .malformedRequest("invalid Content-Length"))
        XCTAssertEqual(
            validate([("Transfer-Encoding", "gzip, chunked")]),
            .malformedRequest("unsupported Transfer-Encoding (only chunked is accepted)"))
        XCTAssertEqual(
            validate([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")]),
            .malformedRequest("unsupported Transfer-Encoding (only chunked is accepted)"))
        XCTAssertNil(validate([("Transfer-Encoding", "Chunked")]))
    }

    func testAWebSocketHandshakeIsAcceptedAsABodilessGET() {
        let upgrade = [("Connection", "keep-alive, Upgrade"), ("Upgrade", "websocket")]
        XCTAssertNil(validate(upgrade, method: .GET))
        XCTAssertNil(validate([("Connection", "upgrade"), ("Upgrade", "WebSocket")], method: .GET), "tokens are case-insensitive")
        XCTAssertEqual(validate(upgrade, method: .POST), .malformedRequest("a WebSocket handshake is an HTTP/1.1 GET"))
        XCTAssertEqual(
            validate(upgrade + [("Content-Length", "5")], method: .GET), .malformedRequest("a WebSocket handshake has no body"))
        XCTAssertEqual(
            validate(upgrade + [("Transfer-Encoding", "chunked")], method: .GET), .malformedRequest("a WebSocket handshake has no body"))
        XCTAssertNil(validate([("Upgrade", "websocket")], method: .GET), "without Connection: upgrade it is no upgrade request")
    }

    func testOtherUpgradesAreRefusedWith501AndH2CIsIgnored() {
        for protocols in [["foo/1"], ["websocket, foo"], ["websocket", "websocket"], ["TLS/1.2"]] {
            let error = validate([("Connection", "Upgrade")] + protocols.map { ("Upgrade", $0) }, method: .GET)
            XCTAssertEqual(error, .upgradeNotSupported, "\(protocols)")
            XCTAssertEqual(error?.status.code, 501)
        }
        XCTAssertNil(validate([("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c")], method: .GET))
    }

    func testDeclaredBodyOverTheLimitIsRefusedWith413() {
        XCTAssertEqual(validate([("Content-Length", "1001")])?.status.code, 413)
        XCTAssertNil(validate([("Content-Length", "1000")]))
        XCTAssertNil(validate([("Content-Length", "999999")], limit: nil))
    }

    func testErrorBodyIsJSONWithTheRequestID() throws {
        let body = ProxyError.upstreamUnreachable("connection refused").jsonBody(requestID: "id \"1\"", allocator: .init())
        let object = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: String]
        XCTAssertEqual(object?["error"], "upstream unreachable: connection refused")
        XCTAssertEqual(object?["request_id"], "id \"1\"")
    }

    func testErrorStatuses() {
        XCTAssertEqual(ProxyError.headersTooLarge.status.code, 431)
        XCTAssertEqual(ProxyError.connectTimeout.status.code, 504)
        XCTAssertEqual(ProxyError.firstByteTimeout.status.code, 504)
        XCTAssertEqual(ProxyError.upstreamClosedEarly.status.code, 502)
        XCTAssertEqual(ProxyError.malformedRequest("x").status.code, 400)
    }
}

import Foundation
