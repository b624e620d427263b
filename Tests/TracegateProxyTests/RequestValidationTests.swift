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

    func testWebSocketUpgradeIsRefusedWith501() {
        let error = validate([("Connection", "keep-alive, Upgrade"), ("Upgrade", "websocket")])
        XCTAssertEqual(error, .upgradeNotSupported)
        XCTAssertEqual(error?.status.code, 501)
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
