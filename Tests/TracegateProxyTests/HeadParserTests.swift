import NIOCore
import NIOHTTP1
import XCTest

@testable import TracegateProxy

final class HeadParserTests: XCTestCase {
    private func parser(max: Int = 1024) -> HeadParser { HeadParser(requestIDHeader: "X-Request-ID", maxHeadBytes: max) }

    /// Parses one request head from `text` fed in pieces of `step` bytes.
    private func request(_ text: String, step: Int = .max) throws -> RequestHead {
        var parser = parser()
        var buffer = ByteBuffer()
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + step)
            buffer.writeBytes(bytes[offset..<end])
            offset = end
            if let length = try parser.headLength(in: &buffer) {
                return try parser.parseRequest(buffer.readSlice(length: length)!)
            }
        }
        throw HeadError.malformed("incomplete in test")
    }

    private func refusal(_ text: String) -> HeadError? {
        do {
            _ = try request(text)
            return nil
        } catch let error as HeadError {
            return error
        } catch {
            return .malformed("\(error)")
        }
    }

    func testHeadArrivingByteByByteParsesLikeAWholeOne() throws {
        let text = "POST /v1/chat?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nX-User-ID: u-1\r\n\r\n"
        for step in [1, 2, 7, .max] {
            let head = try request(text, step: step)
            XCTAssertEqual(head.method, .POST)
            XCTAssertEqual(head.uri, "/v1/chat?x=1")
            XCTAssertEqual(head.version, .http1_1)
            XCTAssertEqual(head.headers.first(name: "x-user-id"), "u-1")
            XCTAssertEqual(head.facts.contentLength, 12)
            XCTAssertEqual(head.facts.hostCount, 1)
        }
    }

    func testLeadingEmptyLinesAreSkippedButBareLFLineEndsAreRefused() throws {
        let head = try request("\r\n\r\nGET / HTTP/1.0\r\nHost: a\r\nX-Request-ID:  r-1 \r\n\r\n")
        XCTAssertEqual(head.version, .http1_0)
        XCTAssertEqual(head.facts.requestIDField.map { head.headers.value(at: $0) }, "r-1")
        XCTAssertFalse(head.isKeepAlive)
        XCTAssertEqual(refusal("GET / HTTP/1.1\nHost: a\n\n"), .malformed("bare LF in head"))
        XCTAssertEqual(refusal("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"), .malformed("bare LF in head"))
    }

    func testConnectionTokensAreRecognised() throws {
        let head = try request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Hop\r\nUpgrade: websocket\r\n\r\n")
        XCTAssertTrue(head.facts.connectionClose)
        XCTAssertTrue(head.facts.hasUpgrade)
        XCTAssertFalse(head.facts.connectionUpgrade)
        XCTAssertEqual(head.facts.connectionNamed.count, 1)
        XCTAssertFalse(head.isKeepAlive)
        XCTAssertEqual(head.fields.map(\.kind), [.host, .connection, .upgrade])
    }

    func testUncommonMethodsAreKept() throws {
        XCTAssertEqual(try request("PROPFIND /x HTTP/1.1\r\nHost: a\r\n\r\n").method, .RAW(value: "PROPFIND"))
        XCTAssertEqual(try request("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").uri, "*")
    }

    func testSmugglingAndMalformedShapesAreRefused() {
        XCTAssertEqual(refusal("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"), .malformed("obsolete line folding in header"))
        XCTAssertEqual(refusal("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), .malformed("invalid header field name"))
        XCTAssertEqual(refusal("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n"), .malformed("invalid character in header value"))
        XCTAssertEqual(refusal("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"), .malformed("bare CR in head"))
        XCTAssertEqual(refusal("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), .versionNotSupported)
        XCTAssertEqual(refusal("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), .malformed("invalid HTTP version"))
        XCTAssertEqual(refusal("GET / HTTP/1.x\r\nHost: a\r\n\r\n"), .malformed("invalid HTTP version"))
        XCTAssertEqual(refusal("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), .malformed("invalid request target"))
        XCTAssertEqual(refusal("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), .malformed("invalid request line"))
        XCTAssertEqual(refusal("GET /a\u{7F} HTTP/1.1\r\nHost: a\r\n\r\n"), .malformed("invalid request target"))
        XCTAssertEqual(refusal("GET / HTTP/1.1\r\n: empty\r\n\r\n"), .malformed("invalid header field name"))
    }

    func testHeadsOverTheLimitAreRefusedWhetherCompleteOrNot() {
        var complete = parser(max: 64)
        var buffer = ByteBuffer(string: "GET / HTTP/1.1\r\nHost: a\r\nX-Long: \(String(repeating: "v", count: 80))\r\n\r\n")
        XCTAssertThrowsError(try complete.headLength(in: &buffer)) { XCTAssertEqual($0 as? HeadError, .tooLarge) }
        var endless = parser(max: 64)
        buffer = ByteBuffer(string: "GET / HTTP/1.1\r\nX-Long: \(String(repeating: "v", count: 80))")
        XCTAssertThrowsError(try endless.headLength(in: &buffer)) { XCTAssertEqual($0 as? HeadError, .tooLarge) }
    }

    func testResponseStatusLines() throws {
        var parser = parser()
        func response(_ text: String) throws -> ResponseHead {
            var buffer = ByteBuffer(string: text)
            let length = try XCTUnwrap(try parser.headLength(in: &buffer))
            return try parser.parseResponse(buffer.readSlice(length: length)!)
        }
        let ok = try response("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
        XCTAssertEqual(ok.status.code, 200)
        XCTAssertEqual(ok.status.reasonPhrase, "OK")
        XCTAssertTrue(ok.isKeepAlive)
        let bare = try response("HTTP/1.0 204\r\n\r\n")
        XCTAssertEqual(bare.status.code, 204)
        XCTAssertFalse(bare.isKeepAlive)
        XCTAssertThrowsError(try response("HTTP/1.1 2x0 OK\r\n\r\n"))
        XCTAssertThrowsError(try response("ICY 200 OK\r\n\r\n"))
    }

    func testHigherHTTP1MinorVersionsAreServedAsHTTP11() throws {
        XCTAssertEqual(try request("GET / HTTP/1.2\r\nHost: a\r\n\r\n").version, .http1_1)
        XCTAssertEqual(try request("GET / HTTP/1.9\r\nHost: a\r\n\r\n").version, .http1_1)
    }

    func testConnectionCannotNameFramingOrRoutingFields() throws {
        let head = try request("POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Transfer-Encoding, HOST, x-hop\r\nContent-Length: 1\r\n\r\n")
        XCTAssertEqual(head.facts.connectionNamed.count, 1, "only x-hop is a connection option")
        XCTAssertEqual(head.facts.contentLength, 1)
    }

    func testExpectationsAndH2CUpgradesAreRecognised() throws {
        let h2c = try request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n")
        XCTAssertTrue(h2c.facts.upgradeOnlyH2C)
        let websocket = try request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c, websocket\r\nConnection: Upgrade\r\n\r\n")
        XCTAssertFalse(websocket.facts.upgradeOnlyH2C)
        let expect = try request("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n")
        XCTAssertTrue(expect.facts.expectsContinue)
        XCTAssertFalse(expect.facts.expectsOther)
        XCTAssertTrue(try request("POST / HTTP/1.1\r\nHost: a\r\nExpect: fly\r\n\r\n").facts.expectsOther)
    }
}

final class BodyReaderTests: XCTestCase {
    /// Feeds `wire` in pieces of `step` bytes; returns the data read, the trailers, and whether the body ended.
    private func read(_ framing: BodyFraming, length: Int = 0, _ wire: String, step: Int) throws -> (String, String?, Bool) {
        var reader = BodyReader(framing: framing, contentLength: length)
        var buffer = ByteBuffer()
        var data = ""
        let bytes = Array(wire.utf8)
        var offset = 0
        while true {
            loop: while true {
                switch try reader.next(&buffer) {
                case .data(let slice):
                    XCTAssertGreaterThan(slice.readableBytes, 0)
                    data += String(buffer: slice)
                case .end(let trailers):
                    return (data, trailers.map { String(buffer: $0) }, buffer.readableBytes == 0 && offset == bytes.count)
                case .needMore:
                    break loop
                }
            }
            guard offset < bytes.count else { return (data, nil, false) }
            let end = min(bytes.count, offset + step)
            buffer.writeBytes(bytes[offset..<end])
            offset = end
        }
    }

    func testChunkedBodySplitAtEveryByteReadsTheSame() throws {
        let wire = "5;ext=1\r\nhello\r\n1A\r\n" + String(repeating: "z", count: 26) + "\r\n0\r\nX-Trailer: t\r\n\r\n"
        for step in 1...wire.utf8.count {
            let (data, trailers, ended) = try read(.chunked, wire, step: step)
            XCTAssertEqual(data, "hello" + String(repeating: "z", count: 26), "step \(step)")
            XCTAssertEqual(trailers, "X-Trailer: t\r\n")
            XCTAssertTrue(ended)
        }
    }

    func testTrailerFieldsThatCouldReframeOrRerouteAreDropped() throws {
        let wire = "1\r\na\r\n0\r\nContent-Length: 50\r\nX-Checksum: abc\r\nTransfer-Encoding: chunked\r\nhost: evil\r\n"
            + "Authorization: Bearer x\r\nX-Other: 1\r\n\r\n"
        let (data, trailers, ended) = try read(.chunked, wire, step: 7)
        XCTAssertEqual(data, "a")
        XCTAssertEqual(trailers, "X-Checksum: abc\r\nX-Other: 1\r\n")
        XCTAssertTrue(ended)
    }

    func testContentLengthStopsAtTheDeclaredLength() throws {
        var reader = BodyReader(framing: .contentLength, contentLength: 3)
        var buffer = ByteBuffer(string: "abcGET / HTTP/1.1")
        guard case .data(let slice) = try reader.next(&buffer) else { return XCTFail() }
        XCTAssertEqual(String(buffer: slice), "abc")
        XCTAssertTrue(reader.isDone)
        XCTAssertEqual(String(buffer: buffer), "GET / HTTP/1.1", "the next message is left in place")
    }

    func testInvalidChunkFramingIsRefused() {
        XCTAssertThrowsError(try read(.chunked, "zz\r\n", step: 100)) { XCTAssertEqual($0 as? BodyReader.Failure, .invalidChunkSize) }
        XCTAssertThrowsError(try read(.chunked, "2\r\nabX\r\n", step: 100)) { XCTAssertEqual($0 as? BodyReader.Failure, .invalidChunkTerminator) }
        XCTAssertThrowsError(try read(.chunked, "1000000000000000\r\n", step: 100)) { XCTAssertEqual($0 as? BodyReader.Failure, .invalidChunkSize) }
        XCTAssertThrowsError(try read(.chunked, String(repeating: "0", count: 5000), step: 100)) {
            XCTAssertEqual($0 as? BodyReader.Failure, .invalidChunkSize)
        }
    }

    func testTrailerFieldsAreCheckedLikeHeaderFields() throws {
        for bad in ["X-T: a\u{0}b", "X-T: a\u{1}b", "no colon", ": empty name", "X T: space in name", "X-T: a\u{7F}"] {
            XCTAssertThrowsError(try read(.chunked, "1\r\na\r\n0\r\n\(bad)\r\n\r\n", step: 100), bad) {
                XCTAssertEqual($0 as? BodyReader.Failure, .invalidTrailerField, bad)
            }
        }
        let (_, trailers, _) = try read(.chunked, "1\r\na\r\n0\r\nX-T: tab\there é\r\n\r\n", step: 3)
        XCTAssertEqual(trailers, "X-T: tab\there é\r\n", "tabs and non-ASCII bytes are allowed in values")
    }

    func testChunkedWriterRoundTrips() throws {
        var out = ByteBuffer()
        ChunkedCoding.writeChunk(ByteBuffer(string: String(repeating: "q", count: 300)), into: &out)
        ChunkedCoding.writeChunk(ByteBuffer(), into: &out)
        ChunkedCoding.writeEnd(trailers: nil, into: &out)
        let (data, _, ended) = try read(.chunked, String(buffer: out), step: 64)
        XCTAssertEqual(data, String(repeating: "q", count: 300))
        XCTAssertTrue(ended)
        XCTAssertTrue(String(buffer: out).hasPrefix("12c\r\n"))
    }

}
