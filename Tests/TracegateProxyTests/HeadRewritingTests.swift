import NIOCore
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

    private func head(_ headers: [(String, String)], _ method: HTTPMethod = .GET, _ uri: String = "/v1/chat") -> RequestHead {
        try! Wire.requestHead(HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders(headers)))
    }

    /// The rewritten head as NIO's parser reads it.
    private func sent(_ request: UpstreamRequest?) throws -> HTTPRequestHead {
        try Wire.decodeRequestHead(XCTUnwrap(request).head)
    }

    func testHopByHopHeadersAndThoseNamedInConnectionAreRemoved() throws {
        var config = configuration()
        config.forwardedHeaders = .none
        let rewriter = RequestHeadRewriter(configuration: config)
        let request = rewriter.rewrite(
            head([
                ("Host", "h"), ("Connection", "keep-alive, X-Secret-Hop"), ("Keep-Alive", "timeout=5"), ("X-Secret-Hop", "1"),
                ("TE", "trailers"), ("Proxy-Connection", "keep-alive"), ("Proxy-Authorization", "Basic abc"),
                ("Upgrade", "h2c"), ("Accept", "text/plain"), ("x-secret-hop", "2"), ("X-Request-ID", "r"),
            ]), clientIP: nil, requestID: ids.generate())
        XCTAssertEqual(try sent(request).headers.map { $0.name }, ["Host", "Accept", "X-Request-ID"])
    }

    func testHeadersWithoutHopByHopFieldsAreKeptInOrderByteForByte() throws {
        var config = configuration()
        config.forwardedHeaders = .none
        let request = try XCTUnwrap(RequestHeadRewriter(configuration: config).rewrite(
            head([("B", "1"), ("A", "2  x"), ("b", "3"), ("Content-Length", "3"), ("X-Request-ID", "r")]), clientIP: nil, requestID: ids.generate()))
        XCTAssertEqual(
            String(buffer: request.head),
            "GET /v1/chat HTTP/1.1\r\nHost: backend.internal:8000\r\nB: 1\r\nA: 2  x\r\nb: 3\r\nX-Request-ID: r\r\nContent-Length: 3\r\n\r\n")
    }

    func testUpstreamRequestGetsForwardingHeadersAndTheUpstreamHost() throws {
        let rewriter = RequestHeadRewriter(configuration: configuration())
        let result = try XCTUnwrap(
            rewriter.rewrite(head([("Host", "api.example.com"), ("X-Forwarded-For", "10.0.0.1"), ("Content-Length", "2")], .POST, "/v1/chat?x=1"), clientIP: "127.0.0.1", requestID: ids.generate()))
        let upstreamHead = try Wire.decodeRequestHead(result.head)
        let h = upstreamHead.headers
        XCTAssertEqual(h["host"], ["backend.internal:8000"])
        XCTAssertEqual(h["x-forwarded-for"], ["10.0.0.1, 127.0.0.1"])
        XCTAssertEqual(h["x-forwarded-proto"], ["http"])
        XCTAssertEqual(h["x-forwarded-host"], ["api.example.com"])
        XCTAssertEqual(h["content-length"], ["2"])
        XCTAssertEqual(result.framing, .contentLength)
        XCTAssertEqual(upstreamHead.uri, "/v1/chat?x=1")
        XCTAssertEqual(upstreamHead.method, .POST)
    }

    func testPreserveHostKeepsTheClientsHost() throws {
        var config = configuration()
        config.preserveHost = true
        let result = try XCTUnwrap(RequestHeadRewriter(configuration: config).rewrite(head([("Host", "api.example.com")]), clientIP: nil, requestID: ids.generate()))
        XCTAssertEqual(try sent(result).headers["host"], ["api.example.com"])
    }

    func testViaAndNoForwardingHeaders() throws {
        var config = configuration()
        config.forwardedHeaders = .via
        let via = try XCTUnwrap(RequestHeadRewriter(configuration: config).rewrite(head([("Via", "1.0 edge")]), clientIP: "1.2.3.4", requestID: ids.generate()))
        XCTAssertEqual(try sent(via).headers["via"], ["1.0 edge, 1.1 tracegate"])
        XCTAssertFalse(try sent(via).headers.contains(name: "x-forwarded-for"))
        config.forwardedHeaders = .none
        let none = try XCTUnwrap(RequestHeadRewriter(configuration: config).rewrite(head([]), clientIP: "1.2.3.4", requestID: ids.generate()))
        XCTAssertFalse(try sent(none).headers.contains(name: "via"))
        XCTAssertFalse(try sent(none).headers.contains(name: "x-forwarded-for"))
    }

    func testRequestIDIsGeneratedWhenAbsentAndKeptWhenPresent() throws {
        let rewriter = RequestHeadRewriter(configuration: configuration())
        let generated = try XCTUnwrap(rewriter.rewrite(head([]), clientIP: nil, requestID: ids.generate()))
        XCTAssertTrue(generated.requestIDWasGenerated)
        XCTAssertEqual(try sent(generated).headers["x-request-id"], [generated.requestID])
        XCTAssertNotNil(try generated.requestID.wholeMatch(of: Regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")))

        let given = try XCTUnwrap(rewriter.rewrite(head([("x-request-id", "abc \"quoted\"")]), clientIP: nil, requestID: ids.generate()))
        XCTAssertFalse(given.requestIDWasGenerated)
        XCTAssertEqual(given.requestID, "abc \"quoted\"")
        XCTAssertEqual(try sent(given).headers["x-request-id"], ["abc \"quoted\""])
    }

    func testTapFieldsReplaceTheClientsFieldsOfTheSameName() throws {
        var config = configuration()
        config.forwardedHeaders = .none
        let request = try XCTUnwrap(RequestHeadRewriter(configuration: config).rewrite(
            head([("traceparent", "00-aaaa"), ("Accept", "*/*"), ("X-Request-ID", "r")]), clientIP: nil, requestID: "unused",
            extraFields: [(name: "TraceParent", value: "00-bbbb")]))
        XCTAssertEqual(try sent(request).headers.map { "\($0.name)=\($0.value)" }, ["Host=backend.internal:8000", "Accept=*/*", "X-Request-ID=r", "TraceParent=00-bbbb"])
    }

    func testChunkedUploadsStayChunked() throws {
        let result = try XCTUnwrap(
            RequestHeadRewriter(configuration: configuration()).rewrite(head([("Transfer-Encoding", "chunked")], .POST, "/"), clientIP: nil, requestID: ids.generate()))
        XCTAssertEqual(result.framing, .chunked)
        XCTAssertEqual(try sent(result).headers["transfer-encoding"], ["chunked"])
    }

    func testBasePathIsPrependedAndAbsoluteFormIsReducedToOriginForm() throws {
        let rewriter = RequestHeadRewriter(configuration: configuration(basePath: "/api"))
        XCTAssertEqual(try sent(rewriter.rewrite(head([], .GET, "/v1?q=1"), clientIP: nil, requestID: ids.generate())).uri, "/api/v1?q=1")
        XCTAssertEqual(try sent(rewriter.rewrite(head([], .GET, "http://example.com/v2?q=2"), clientIP: nil, requestID: ids.generate())).uri, "/api/v2?q=2")
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

    private func response(_ status: HTTPResponseStatus, _ headers: [(String, String)]) -> ResponseHead {
        try! Wire.responseHead(HTTPResponseHead(version: .http1_1, status: status, headers: HTTPHeaders(headers)))
    }

    /// Rewrites `head` as the data plane does, returning the upstream framing, the client's head (as NIO reads it) and the result.
    private func rewrite(
        _ head: ResponseHead, requestIsHEAD: Bool = false, clientVersion: HTTPVersion = .http1_1, keepClientAlive: Bool = true,
        requestID: String = "rid"
    ) throws -> (framing: BodyFraming, head: HTTPResponseHead, result: ClientResponse) {
        let framing = try XCTUnwrap(ResponseFraming.of(head, requestIsHEAD: requestIsHEAD))
        let result = responses.rewrite(
            head, framing: framing, requestIsHEAD: requestIsHEAD, clientVersion: clientVersion,
            keepClientAlive: keepClientAlive, requestID: requestID)
        return (framing, try Wire.decodeResponseHead(result.head), result)
    }

    func testChunkedResponsesAreRechunkedForHTTP11Clients() throws {
        let r = try rewrite(
            response(.ok, [("Transfer-Encoding", "chunked"), ("Connection", "keep-alive"), ("Content-Type", "text/event-stream")]))
        XCTAssertEqual(r.framing, .chunked)
        XCTAssertFalse(r.result.closeAfter)
        XCTAssertTrue(r.result.chunked)
        XCTAssertEqual(r.head.headers["transfer-encoding"], ["chunked"])
        XCTAssertEqual(r.head.headers["connection"], [])
        XCTAssertEqual(r.head.headers["x-request-id"], ["rid"])
        XCTAssertEqual(r.head.headers["content-type"], ["text/event-stream"])
    }

    func testHTTP10ClientsGetCloseDelimitedBodies() throws {
        let r = try rewrite(response(.ok, [("Transfer-Encoding", "chunked")]), clientVersion: .http1_0)
        XCTAssertTrue(r.result.closeAfter)
        XCTAssertFalse(r.result.chunked)
        XCTAssertFalse(r.head.headers.contains(name: "transfer-encoding"))
        XCTAssertEqual(r.head.headers["connection"], ["close"])
        XCTAssertEqual(r.head.version, .http1_0)
    }

    func testResponsesWithoutLengthAreCloseDelimitedUpstream() throws {
        let r = try rewrite(response(.ok, []))
        XCTAssertEqual(r.framing, .untilClose)
        XCTAssertEqual(r.head.headers["transfer-encoding"], ["chunked"])
    }

    func testHeadAndNoContentResponsesHaveNoBody() throws {
        let headResponse = try rewrite(response(.ok, [("Content-Length", "42")]), requestIsHEAD: true)
        XCTAssertEqual(headResponse.framing, .none)
        XCTAssertEqual(headResponse.head.headers["content-length"], ["42"])
        let noContent = try rewrite(response(.noContent, []))
        XCTAssertEqual(noContent.framing, .none)
        XCTAssertFalse(noContent.head.headers.contains(name: "transfer-encoding"))
    }

    func testConflictingResponseContentLengthsAreRefused() {
        XCTAssertNil(ResponseFraming.of(response(.ok, [("Content-Length", "2"), ("Content-Length", "3")]), requestIsHEAD: false))
        XCTAssertNil(ResponseFraming.of(response(.ok, [("Content-Length", "2x")]), requestIsHEAD: false))
        XCTAssertEqual(ResponseFraming.of(response(.ok, [("Content-Length", "2, 2")]), requestIsHEAD: false), .contentLength)
    }

    func testUpstreamRequestIDInResponseIsNotDuplicated() throws {
        let r = try rewrite(
            response(.ok, [("x-request-id", "theirs"), ("Content-Length", "0")]), keepClientAlive: false, requestID: "ours")
        XCTAssertEqual(r.head.headers["x-request-id"], ["theirs"])
        XCTAssertEqual(r.head.headers["connection"], ["close"])
        XCTAssertTrue(r.result.closeAfter)
    }

    func testStatusLineAndFieldsAreCopiedByteForByte() throws {
        let head = response(.init(statusCode: 299, reasonPhrase: "Odd Reason"), [("X-A", "1  2"), ("Content-Length", "0")])
        let r = responses.rewrite(
            head, framing: .contentLength, requestIsHEAD: false, clientVersion: .http1_1, keepClientAlive: true, requestID: "i")
        XCTAssertEqual(String(buffer: r.head), "HTTP/1.1 299 Odd Reason\r\nX-A: 1  2\r\ncontent-length: 0\r\nX-Request-ID: i\r\n\r\n")
    }

    // MARK: Framing is the proxy's (issue: desync through `Connection` naming a framing field)

    func testLengthsAreWrittenInDecimal() {
        for value in [0, 7, 10, 99, 100, 1_234_567_890, Int.max] {
            var buffer = ByteBuffer()
            buffer.writeDecimal(value)
            XCTAssertEqual(String(buffer: buffer), String(value))
        }
    }

    func testConnectionNamingContentLengthCannotRemoveTheRequestFraming() throws {
        for connection in ["Content-Length", "keep-alive, content-length", "content-length, close", "Transfer-Encoding, Host"] {
            let request = try XCTUnwrap(RequestHeadRewriter(configuration: configuration()).rewrite(
                head([("Host", "h"), ("Connection", connection), ("Content-Length", "35")], .POST),
                clientIP: nil, requestID: ids.generate()))
            XCTAssertEqual(request.framing, .contentLength, connection)
            XCTAssertEqual(try sent(request).headers["content-length"], ["35"], connection)
        }
    }

    func testConnectionNamingHostKeepsThePreservedHost() throws {
        var config = configuration()
        config.preserveHost = true
        let request = RequestHeadRewriter(configuration: config).rewrite(
            head([("Host", "client.example"), ("Connection", "host")]), clientIP: nil, requestID: ids.generate())
        XCTAssertEqual(try sent(request).headers["host"], ["client.example"])
    }

    func testRepeatedContentLengthsAreRefusedEvenWhenEqual() throws {
        for fields in [[("Content-Length", "5"), ("Content-Length", "5")], [("Content-Length", "5, 5")]] {
            XCTAssertEqual(
                ClientConnectionHandler.validate(head([("Host", "h")] + fields, .POST), maxBodyBytes: nil),
                .malformedRequest("more than one Content-Length value"), "\(fields)")
        }
    }

    func testZeroContentLengthIsKeptAndChunkedRequestsGetOnlyTransferEncoding() throws {
        let empty = RequestHeadRewriter(configuration: configuration()).rewrite(
            head([("Host", "h"), ("Content-Length", "0")], .POST), clientIP: nil, requestID: ids.generate())
        XCTAssertEqual(try sent(empty).headers["content-length"], ["0"])
        let chunked = RequestHeadRewriter(configuration: configuration()).rewrite(
            head([("Host", "h"), ("Transfer-Encoding", "chunked"), ("Connection", "transfer-encoding")], .POST),
            clientIP: nil, requestID: ids.generate())
        XCTAssertEqual(try sent(chunked).headers["transfer-encoding"], ["chunked"])
        XCTAssertFalse(try sent(chunked).headers.contains(name: "content-length"))
    }

    func testExpectAndH2CUpgradeFieldsAreNotForwarded() throws {
        let request = RequestHeadRewriter(configuration: configuration()).rewrite(
            head([("Host", "h"), ("Expect", "100-continue"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQ"),
                  ("Connection", "Upgrade"), ("Content-Length", "1")], .POST), clientIP: nil, requestID: ids.generate())
        let names = Set(try sent(request).headers.map { $0.name.lowercased() })
        XCTAssertTrue(names.isDisjoint(with: ["expect", "upgrade", "http2-settings", "connection"]), "\(names)")
    }

    func testResponseConnectionNamingContentLengthStillReachesTheClientWithItsLength() throws {
        let r = try rewrite(response(.ok, [("Connection", "Content-Length"), ("Content-Length", "7")]))
        XCTAssertEqual(r.framing, .contentLength)
        XCTAssertEqual(r.head.headers["content-length"], ["7"])
    }

    func testResponseDuplicateContentLengthsReachTheClientAsOne() throws {
        let r = try rewrite(response(.ok, [("Content-Length", "7"), ("Content-Length", "7, 7")]))
        XCTAssertEqual(r.head.headers["content-length"], ["7"])
    }

    func testChunkedResponseWithAContentLengthLosesTheLength() throws {
        let r = try rewrite(response(.ok, [("Content-Length", "7"), ("Transfer-Encoding", "chunked")]))
        XCTAssertEqual(r.framing, .chunked)
        XCTAssertEqual(r.head.headers["transfer-encoding"], ["chunked"])
        XCTAssertFalse(r.head.headers.contains(name: "content-length"))
    }
}
