import NIOHTTP1
import XCTest

@testable import TracegateProxy

final class HeadRewritingTests: XCTestCase {
    private var ids = RequestIDGenerator()

    func testGeneratedRequestIDsAreDistinctVersion4UUIDs() throws {
        let pattern = try Regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
        let generated = (0..<1000).map { _ in ids.generate() }
        XCTAssertEqual(Set(generated).count, 1000)
        for id in generated { XCTAssertNotNil(id.wholeMatch(of: pattern), id) }
        var first = RequestIDGenerator()
        var second = RequestIDGenerator()
        XCTAssertNotEqual(first.generate(), second.generate(), "each generator has its own seed")
    }
    private func configuration(basePath: String = "", port: Int = 8000) -> ProxyConfiguration {
        ProxyConfiguration(upstream: .init(host: "backend.internal", port: port, usesTLS: false, basePath: basePath))
    }

    private func head(_ headers: [(String, String)], _ method: HTTPMethod = .GET, _ uri: String = "/v1/chat") -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders(headers))
    }

    func testHopByHopHeadersAndThoseNamedInConnectionAreRemoved() {
        var headers = HTTPHeaders([
            ("Connection", "keep-alive, X-Secret-Hop"), ("Keep-Alive", "timeout=5"), ("X-Secret-Hop", "1"),
            ("TE", "trailers"), ("Proxy-Connection", "keep-alive"), ("Proxy-Authorization", "Basic abc"),
            ("Upgrade", "h2c"), ("Transfer-Encoding", "chunked"), ("Accept", "text/plain"), ("x-secret-hop", "2"),
        ])
        HopByHop.strip(&headers)
        XCTAssertEqual(headers.map { $0.name }, ["Accept"])
    }

    func testHeadersWithoutHopByHopFieldsAreKeptInOrder() {
        var headers = HTTPHeaders([("B", "1"), ("A", "2"), ("b", "3"), ("Content-Length", "3")])
        HopByHop.strip(&headers)
        XCTAssertEqual(headers.map { "\($0.name)=\($0.value)" }, ["B=1", "A=2", "b=3", "Content-Length=3"])
    }

    func testUpstreamRequestGetsForwardingHeadersAndTheUpstreamHost() throws {
        let rewriter = RequestHeadRewriter(configuration: configuration())
        let result = try XCTUnwrap(
            rewriter.rewrite(head([("Host", "api.example.com"), ("X-Forwarded-For", "10.0.0.1"), ("Content-Length", "2")], .POST, "/v1/chat?x=1"), clientIP: "127.0.0.1", ids: &ids))
        let h = result.head.headers
        XCTAssertEqual(h["host"], ["backend.internal:8000"])
        XCTAssertEqual(h["x-forwarded-for"], ["10.0.0.1, 127.0.0.1"])
        XCTAssertEqual(h["x-forwarded-proto"], ["http"])
        XCTAssertEqual(h["x-forwarded-host"], ["api.example.com"])
        XCTAssertEqual(h["content-length"], ["2"])
        XCTAssertEqual(result.framing, .contentLength)
        XCTAssertEqual(result.head.uri, "/v1/chat?x=1")
        XCTAssertEqual(result.head.method, .POST)
    }

    func testPreserveHostKeepsTheClientsHost() throws {
        var config = configuration()
        config.preserveHost = true
        let result = try XCTUnwrap(RequestHeadRewriter(configuration: config).rewrite(head([("Host", "api.example.com")]), clientIP: nil, ids: &ids))
        XCTAssertEqual(result.head.headers["host"], ["api.example.com"])
    }

    func testViaAndNoForwardingHeaders() throws {
        var config = configuration()
        config.forwardedHeaders = .via
        let via = try XCTUnwrap(RequestHeadRewriter(configuration: config).rewrite(head([("Via", "1.0 edge")]), clientIP: "1.2.3.4", ids: &ids))
        XCTAssertEqual(via.head.headers["via"], ["1.0 edge, 1.1 tracegate"])
        XCTAssertFalse(via.head.headers.contains(name: "x-forwarded-for"))
        config.forwardedHeaders = .none
        let none = try XCTUnwrap(RequestHeadRewriter(configuration: config).rewrite(head([]), clientIP: "1.2.3.4", ids: &ids))
        XCTAssertFalse(none.head.headers.contains(name: "via"))
        XCTAssertFalse(none.head.headers.contains(name: "x-forwarded-for"))
    }

    func testRequestIDIsGeneratedWhenAbsentAndKeptWhenPresent() throws {
        let rewriter = RequestHeadRewriter(configuration: configuration())
        let generated = try XCTUnwrap(rewriter.rewrite(head([]), clientIP: nil, ids: &ids))
        XCTAssertTrue(generated.requestIDWasGenerated)
        XCTAssertEqual(generated.head.headers["x-request-id"], [generated.requestID])
        XCTAssertNotNil(try generated.requestID.wholeMatch(of: Regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")))

        let given = try XCTUnwrap(rewriter.rewrite(head([("x-request-id", "abc \"quoted\"")]), clientIP: nil, ids: &ids))
        XCTAssertFalse(given.requestIDWasGenerated)
        XCTAssertEqual(given.requestID, "abc \"quoted\"")
        XCTAssertEqual(given.head.headers["x-request-id"], ["abc \"quoted\""])
    }

    func testChunkedUploadsStayChunked() throws {
        let result = try XCTUnwrap(
            RequestHeadRewriter(configuration: configuration()).rewrite(head([("Transfer-Encoding", "chunked")], .POST, "/"), clientIP: nil, ids: &ids))
        XCTAssertEqual(result.framing, .chunked)
        XCTAssertEqual(result.head.headers["transfer-encoding"], ["chunked"])
    }

    func testBasePathIsPrependedAndAbsoluteFormIsReducedToOriginForm() throws {
        let rewriter = RequestHeadRewriter(configuration: configuration(basePath: "/api"))
        XCTAssertEqual(rewriter.rewrite(head([], .GET, "/v1?q=1"), clientIP: nil, ids: &ids)?.head.uri, "/api/v1?q=1")
        XCTAssertEqual(RequestHeadRewriter.originForm("http://example.com/a/b?c=d"), "/a/b?c=d")
        XCTAssertEqual(RequestHeadRewriter.originForm("http://example.com"), "/")
        XCTAssertEqual(RequestHeadRewriter.originForm("http://example.com?x=1"), "/?x=1")
        XCTAssertEqual(RequestHeadRewriter.originForm("*"), "*")
        XCTAssertNil(RequestHeadRewriter.originForm("ftp://example.com/"))
        XCTAssertNil(RequestHeadRewriter.originForm("nonsense"))
    }

    func testUpstreamHostHeaderOmitsDefaultPorts() {
        XCTAssertEqual(ProxyConfiguration.Upstream(host: "a", port: 80, usesTLS: false).hostHeader, "a")
        XCTAssertEqual(ProxyConfiguration.Upstream(host: "a", port: 443, usesTLS: true).hostHeader, "a")
        XCTAssertEqual(ProxyConfiguration.Upstream(host: "a", port: 443, usesTLS: false).hostHeader, "a:443")
        XCTAssertEqual(ProxyConfiguration.Upstream(host: "::1", port: 8000, usesTLS: false).hostHeader, "[::1]:8000")
    }

    // MARK: Responses

    private let responses = ResponseHeadRewriter(requestIDHeader: "X-Request-ID")

    private func response(_ status: HTTPResponseStatus, _ headers: [(String, String)]) -> HTTPResponseHead {
        HTTPResponseHead(version: .http1_1, status: status, headers: HTTPHeaders(headers))
    }

    func testChunkedResponsesAreRechunkedForHTTP11Clients() {
        let r = responses.rewrite(
            response(.ok, [("Transfer-Encoding", "chunked"), ("Connection", "keep-alive"), ("Content-Type", "text/event-stream")]),
            requestIsHEAD: false, clientVersion: .http1_1, keepClientAlive: true, requestID: "rid")
        XCTAssertEqual(r.upstreamFraming, .chunked)
        XCTAssertFalse(r.closeAfter)
        XCTAssertEqual(r.head.headers["transfer-encoding"], ["chunked"])
        XCTAssertEqual(r.head.headers["connection"], [])
        XCTAssertEqual(r.head.headers["x-request-id"], ["rid"])
        XCTAssertEqual(r.head.headers["content-type"], ["text/event-stream"])
    }

    func testHTTP10ClientsGetCloseDelimitedBodies() {
        let r = responses.rewrite(
            response(.ok, [("Transfer-Encoding", "chunked")]), requestIsHEAD: false, clientVersion: .http1_0,
            keepClientAlive: true, requestID: "rid")
        XCTAssertTrue(r.closeAfter)
        XCTAssertFalse(r.head.headers.contains(name: "transfer-encoding"))
        XCTAssertEqual(r.head.headers["connection"], ["close"])
        XCTAssertEqual(r.head.version, .http1_0)
    }

    func testResponsesWithoutLengthAreCloseDelimitedUpstream() {
        let r = responses.rewrite(response(.ok, []), requestIsHEAD: false, clientVersion: .http1_1, keepClientAlive: true, requestID: "rid")
        XCTAssertEqual(r.upstreamFraming, .untilClose)
        XCTAssertEqual(r.head.headers["transfer-encoding"], ["chunked"])
    }

    func testHeadAndNoContentResponsesHaveNoBody() {
        let headResponse = responses.rewrite(
            response(.ok, [("Content-Length", "42")]), requestIsHEAD: true, clientVersion: .http1_1, keepClientAlive: true, requestID: "r")
        XCTAssertEqual(headResponse.upstreamFraming, .none)
        XCTAssertEqual(headResponse.head.headers["content-length"], ["42"])
        let noContent = responses.rewrite(
            response(.noContent, []), requestIsHEAD: false, clientVersion: .http1_1, keepClientAlive: true, requestID: "r")
        XCTAssertEqual(noContent.upstreamFraming, .none)
        XCTAssertFalse(noContent.head.headers.contains(name: "transfer-encoding"))
    }

    func testUpstreamRequestIDInResponseIsNotDuplicated() {
        let r = responses.rewrite(
            response(.ok, [("x-request-id", "theirs"), ("Content-Length", "0")]), requestIsHEAD: false,
            clientVersion: .http1_1, keepClientAlive: false, requestID: "ours")
        XCTAssertEqual(r.head.headers["x-request-id"], ["theirs"])
        XCTAssertEqual(r.head.headers["connection"], ["close"])
        XCTAssertTrue(r.closeAfter)
    }
}
