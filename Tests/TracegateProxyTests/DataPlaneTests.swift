import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import TracegateProxy

/// Hands out in-memory upstream channels on the test's event loop, and records them.
final class EmbeddedUpstreams: UpstreamConnecting, @unchecked Sendable {
    let loop: EmbeddedEventLoop
    private(set) var channels: [EmbeddedChannel] = []
    /// Reads what the proxy wrote to each channel.
    private(set) var decoders: [RequestDecoder] = []
    /// When set, the next connect fails with this error.
    var failNextConnect: Error?

    init(loop: EmbeddedEventLoop) { self.loop = loop }

    func connect(on eventLoop: EventLoop) -> EventLoopFuture<UpstreamConnection> {
        if let error = failNextConnect {
            failNextConnect = nil
            return loop.makeFailedFuture(error)
        }
        let handler = UpstreamHandler()
        let channel = EmbeddedChannel(loop: loop)
        decoders.append(RequestDecoder())
        try! channel.pipeline.syncOperations.addHandler(handler)
        try! channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
        channels.append(channel)
        return loop.makeSucceededFuture(UpstreamConnection(channel: channel, handler: handler))
    }
}

/// Counts the reads a channel asks for (to see reads held for backpressure).
final class ReadCounter: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = ByteBuffer
    let onRead: () -> Void
    init(onRead: @escaping () -> Void) { self.onRead = onRead }
    func read(context: ChannelHandlerContext) {
        onRead()
        context.read()
    }
}

/// Records finished exchanges; hands `tap` to the exchanges that start.
final class RecordingObserver: ExchangeObserver, @unchecked Sendable {
    var summaries: [ExchangeSummary] = []
    var tap: ExchangeTap?
    func exchangeStarted(_ head: RequestHead, requestID: String) -> ExchangeTap? { tap }
    func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) { summaries.append(summary) }
}

/// Calls `sawTunnelBytes` for every tunnel chunk the tap is given.
final class TunnelTap: ExchangeTap {
    var responseHeaders: [(name: String, value: String)] { [] }
    var sawTunnelBytes: (ByteBuffer, Bool) -> Void = { _, _ in }
    func requestBody(_ bytes: ByteBuffer) {}
    func responseHead(_ head: ResponseHead) {}
    func responseBody(_ bytes: ByteBuffer) {}
    func tunnelBytes(_ bytes: ByteBuffer, fromClient: Bool) { sawTunnelBytes(bytes, fromClient) }
}

/// Drives `ClientConnectionHandler` on in-memory channels: no sockets, no sleeps. Requests and responses
/// are written as bytes and what the proxy writes is read back with NIO's own HTTP/1 parser.
final class DataPlaneTests: XCTestCase {
    private var loop: EmbeddedEventLoop!
    private var upstreams: EmbeddedUpstreams!
    private var observer: RecordingObserver!
    private var client: EmbeddedChannel!
    private var pools: [UpstreamPool]!
    private var clientDecoder: ResponseDecoder!
    /// Whether the last request / response head sent announced chunked coding.
    private var requestChunked = false
    private var responseChunked: [Int: Bool] = [:]

    private func makeClient(_ configure: (inout ProxyConfiguration) -> Void = { _ in }) throws {
        loop = EmbeddedEventLoop()
        upstreams = EmbeddedUpstreams(loop: loop)
        observer = RecordingObserver()
        var configuration = ProxyConfiguration(upstream: .init(host: "backend", port: 8000, usesTLS: false))
        configuration.firstByteTimeout = .seconds(10)
        configuration.idleTimeout = .seconds(20)
        configuration.clientKeepaliveTimeout = .seconds(30)
        configuration.clientHeaderTimeout = .seconds(15)
        configuration.clientBodyTimeout = .seconds(25)
        configuration.requestBufferingBytes = 0  // bodies stream unless a test asks otherwise
        configure(&configuration)
        pools = configuration.upstreams.map { _ in UpstreamPool(eventLoop: loop, connector: upstreams, maxIdle: 4) }
        let shared = ProxyShared(configuration: configuration, observer: nil)  // connections use their loop's observer only
        client = EmbeddedChannel(loop: loop)
        clientDecoder = ResponseDecoder()
        try client.pipeline.syncOperations.addHandler(ClientConnectionHandler(shared: shared, loop: LoopShared(eventLoop: loop, pools: pools, observer: observer?.forEventLoop(loop))))
        try client.connect(to: SocketAddress(ipAddress: "10.1.2.3", port: 4000)).wait()
    }

    private func send(_ method: HTTPMethod = .GET, _ uri: String = "/v1/chat", headers: [(String, String)] = [], body: [String] = [], end: Bool = true) throws {
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders([("Host", "proxy")] + headers))
        requestChunked = head.headers["transfer-encoding"].contains("chunked")
        try clientDecoder.expectResponse(to: method)
        try client.writeInbound(Wire.bytes(head))
        for part in body { try sendBody(part) }
        if end { try sendEnd() }
    }

    private func sendBody(_ part: String) throws {
        try client.writeInbound(Wire.body(part, chunked: requestChunked))
    }

    private func sendEnd() throws {
        if requestChunked { try client.writeInbound(Wire.lastChunk) }
    }

    /// What the proxy sent to upstream `index` since the last call, as NIO parses it.
    private func upstreamParts(_ index: Int = 0) throws -> [HTTPServerRequestPart] {
        var parts: [HTTPServerRequestPart] = []
        while let bytes = try upstreams.channels[index].readOutbound(as: ByteBuffer.self) {
            parts += try upstreams.decoders[index].feed(bytes)
        }
        return parts
    }

    /// What the proxy sent to the client since the last call, as NIO parses it.
    private func clientParts() throws -> [HTTPClientResponsePart] {
        var parts: [HTTPClientResponsePart] = []
        while let bytes = try client.readOutbound(as: ByteBuffer.self) { parts += try clientDecoder.feed(bytes) }
        return parts
    }

    private func respond(_ index: Int = 0, status: HTTPResponseStatus = .ok, headers: [(String, String)] = [("Content-Length", "2")], body: [String] = ["ok"], end: Bool = true) throws {
        let upstream = upstreams.channels[index]
        let head = HTTPResponseHead(version: .http1_1, status: status, headers: HTTPHeaders(headers))
        responseChunked[index] = head.headers["transfer-encoding"].contains("chunked")
        try upstream.writeInbound(Wire.bytes(head))
        for part in body { try respondBody(part, index) }
        if end { try respondEnd(index) }
    }

    private func respondBody(_ part: String, _ index: Int = 0) throws {
        try upstreams.channels[index].writeInbound(Wire.body(part, chunked: responseChunked[index] ?? false))
    }

    private func respondEnd(_ index: Int = 0) throws {
        if responseChunked[index] ?? false { try upstreams.channels[index].writeInbound(Wire.lastChunk) }
    }

    private func status(of parts: [HTTPClientResponsePart]) -> UInt? {
        for case .head(let head) in parts { return head.status.code }
        return nil
    }

    private func bodyText(of parts: [HTTPClientResponsePart]) -> String {
        parts.compactMap { part -> String? in
            if case .body(let buffer) = part { return String(buffer: buffer) }
            return nil
        }.joined()
    }

    override func tearDown() {
        _ = try? client?.finish()
        for channel in upstreams?.channels ?? [] { _ = try? channel.finish() }
    }

    // MARK: Forwarding

    func testRequestBodyIsForwardedPartByPartBeforeTheRequestEnds() throws {
        try makeClient()
        try send(.POST, "/upload", headers: [("Transfer-Encoding", "chunked")], body: ["one"], end: false)
        var parts = try upstreamParts()
        guard case .head(let head) = parts.first else { return XCTFail("no head upstream: \(parts)") }
        XCTAssertEqual(head.headers["x-forwarded-for"], ["10.1.2.3"])
        XCTAssertEqual(parts.count, 2, "the first body part must go upstream before the request ends")
        try sendBody("two")
        try sendEnd()
        parts = try upstreamParts()
        XCTAssertEqual(parts.count, 2)
        guard case .end = parts.last else { return XCTFail("no end upstream") }
    }

    func testEachStreamedResponsePartReachesTheClientAsItArrives() throws {
        try makeClient()
        try send()
        _ = try upstreamParts()
        try respond(headers: [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")], body: [], end: false)
        let head = try clientParts()
        XCTAssertEqual(status(of: head), 200)
        for event in ["data: 1\n\n", "data: 2\n\n"] {
            try respondBody(event)
            // EmbeddedChannel only surfaces flushed writes: each event must have been flushed on its own.
            XCTAssertEqual(bodyText(of: try clientParts()), event)
        }
        try respondEnd()
        guard case .end = try clientParts().last else { return XCTFail("no end to the client") }
        XCTAssertEqual(observer.summaries.first?.outcome, .completed)
        XCTAssertEqual(observer.summaries.first?.responseBodyBytes, 18)
    }

    /// Chunks are re-framed exactly: a small one copied into one write, a large one written in three.
    func testResponseChunksOfEverySizeReachTheClientFramedExactly() throws {
        try makeClient()
        try send()
        _ = try upstreamParts()
        try respond(headers: [("Transfer-Encoding", "chunked")], body: [], end: false)
        _ = try clientParts()
        for size in [1, 300, 4096, 4097, 20_000] {
            let data = String(repeating: "x", count: size)
            try respondBody(data)
            var wire = ""
            while let bytes = try client.readOutbound(as: ByteBuffer.self) { wire += String(buffer: bytes) }
            XCTAssertEqual(wire, String(size, radix: 16) + "\r\n" + data + "\r\n", "chunk of \(size) bytes")
        }
        try respondEnd()
        var end = ""
        while let bytes = try client.readOutbound(as: ByteBuffer.self) { end += String(buffer: bytes) }
        XCTAssertEqual(end, "0\r\n\r\n")
    }

    func testServerTimingSplitsConnectAndUpstreamTime() throws {
        try makeClient()
        try send()
        loop.advanceTime(by: .milliseconds(7))
        try respond()
        guard case .head(let first) = try clientParts().first else { return XCTFail("no response") }
        XCTAssertEqual(first.headers["server-timing"], ["tracegate;dur=0.000, connect;dur=0.000, upstream;dur=7.000"])
        try send()
        loop.advanceTime(by: .microseconds(2_345))
        try respond()
        guard case .head(let second) = try clientParts().first else { return XCTFail("no response") }
        XCTAssertEqual(second.headers["server-timing"], ["tracegate;dur=0.000, upstream;dur=2.345"], "pooled: no connect")
    }

    func testServerTimingWritesWholeMillisecondsDigitByDigit() {
        for (micros, expected) in [(0, "0.000"), (9_999, "9.999"), (10_000, "10.000"), (1_234_567, "1234.567"), (-5, "0.000")] {
            var out = ByteBuffer()
            ServerTiming.writeMilliseconds(.microseconds(Int64(micros)), into: &out)
            XCTAssertEqual(String(buffer: out), expected)
        }
    }

    func testServerTimingCanBeTurnedOff() throws {
        try makeClient { $0.serverTiming = false }
        try send()
        try respond()
        guard case .head(let head) = try clientParts().first else { return XCTFail("no response") }
        XCTAssertFalse(head.headers.contains(name: "server-timing"))
    }

    func testUpstreamConnectionIsReusedForTheNextRequest() throws {
        try makeClient()
        try send()
        try respond()
        try send()
        try respond()
        XCTAssertEqual(upstreams.channels.count, 1)
        XCTAssertEqual(observer.summaries.count, 2)
    }

    func testAResponseEndingWithConnectionCloseIsACompletedExchange() throws {
        try makeClient()
        try send(headers: [("Connection", "close")])
        _ = try upstreamParts()
        try respond()
        XCTAssertEqual(bodyText(of: try clientParts()), "ok")
        XCTAssertFalse(client.isActive, "the client connection closes after the response")
        XCTAssertEqual(observer.summaries.map(\.outcome), [.completed], "the close that follows the response is no abort")
    }

    func testRoutesSendEachRequestToItsUpstreamWithItsOwnPool() throws {
        try makeClient { configuration in
            configuration.routes = [
                .init(rule: .init(pathPrefix: "/v1/chat"), upstream: .init(host: "chat", port: 9000, usesTLS: false, basePath: "/api")),
            ]
        }
        func upstreamHost(_ parts: [HTTPServerRequestPart]) -> (String?, String?) {
            guard case .head(let head)? = parts.first else { return (nil, nil) }
            return (head.headers["host"].first, head.uri)
        }
        try send(.GET, "/v1/chat/completions")
        XCTAssertEqual(upstreamHost(try upstreamParts(0)).0, "chat:9000")
        try respond(0)
        try send(.GET, "/v1/models")
        XCTAssertEqual(upstreams.channels.count, 2, "the default upstream does not reuse the route's connection")
        XCTAssertEqual(upstreamHost(try upstreamParts(1)).0, "backend:8000")
        try respond(1)
        try send(.GET, "/v1/chat")
        XCTAssertEqual(upstreams.channels.count, 2, "the route's pooled connection is reused")
        let (host, uri) = upstreamHost(try upstreamParts(0))
        XCTAssertEqual(host, "chat:9000")
        XCTAssertEqual(uri, "/api/v1/chat", "the route's base path is prepended")
        try respond(0)
        XCTAssertEqual(observer.summaries.map(\.route), [.configured(0), .defaultUpstream, .configured(0)])
    }

    func testUpstreamConnectionThatAnnouncedCloseIsNotPooled() throws {
        try makeClient()
        try send()
        try respond(headers: [("Content-Length", "2"), ("Connection", "close")])
        XCTAssertFalse(upstreams.channels[0].isActive)
        try send()
        XCTAssertEqual(upstreams.channels.count, 2)
    }

    func testPipelinedRequestsAreAnsweredInOrder() throws {
        try makeClient()
        try send(.GET, "/first")
        try send(.GET, "/second")
        XCTAssertEqual(upstreams.channels.count, 1, "the second request waits for the first")
        try respond(body: ["r1"])
        try respond(body: ["r2"])
        let parts = try clientParts()
        XCTAssertEqual(bodyText(of: parts), "r1r2")
        XCTAssertEqual(observer.summaries.map(\.target), ["/first", "/second"])
    }

    // MARK: Backpressure

    func testUpstreamReadsAreHeldWhileTheClientIsNotWritable() throws {
        try makeClient()
        try send()
        try respond(headers: [("Transfer-Encoding", "chunked")], body: ["a"], end: false)
        let handler = try upstreams.channels[0].pipeline.syncOperations.handler(type: UpstreamHandler.self)
        client.isWritable = false
        client.pipeline.fireChannelWritabilityChanged()
        XCTAssertFalse((handler.owner?.mayReadUpstream) ?? true)
        client.isWritable = true
        client.pipeline.fireChannelWritabilityChanged()
        XCTAssertTrue((handler.owner?.mayReadUpstream) ?? false)
    }

    // MARK: Failures

    func testRefusedConnectAnswers502WithJSON() throws {
        try makeClient()
        upstreams.failNextConnect = IOError(errnoCode: ECONNREFUSED, reason: "connect")
        try send()
        let parts = try clientParts()
        XCTAssertEqual(status(of: parts), 502)
        XCTAssertTrue(bodyText(of: parts).contains("\"error\":\"upstream unreachable: connection refused\""), bodyText(of: parts))
        XCTAssertEqual(observer.summaries.first?.status, 502)
    }

    /// The proxy's own answer keeps to what the client asked (RFC 9112 §9.6): `Connection: close`,
    /// or HTTP/1.0 without keep-alive, closes the connection after it and says so.
    func testAnErrorAnswerClosesWhenTheClientAskedToClose() throws {
        for (version, extra) in [("HTTP/1.1", "Connection: close\r\n"), ("HTTP/1.0", "")] {
            try makeClient()
            upstreams.failNextConnect = IOError(errnoCode: ECONNREFUSED, reason: "connect")
            try clientDecoder.expectResponse(to: .GET)
            try client.writeInbound(ByteBuffer(string: "GET /v1/chat \(version)\r\nHost: proxy\r\n\(extra)\r\n"))
            let parts = try clientParts()
            XCTAssertEqual(status(of: parts), 502, version)
            guard case .head(let head) = parts.first else { return XCTFail("no response head for \(version)") }
            XCTAssertEqual(head.headers["connection"], ["close"], version)
            XCTAssertFalse(client.isActive, "\(version): the connection closes after the answer")
        }
    }

    func testRefusedConnectDuringAnUploadIsAnUpstreamFailureNotAClientAbort() throws {
        try makeClient()
        upstreams.failNextConnect = IOError(errnoCode: ECONNREFUSED, reason: "connect")
        try send(.POST, "/v1/chat/completions", headers: [("Content-Length", "10")], body: ["abc"], end: false)
        XCTAssertEqual(status(of: try clientParts()), 502)
        XCTAssertEqual(observer.summaries.count, 1)
        guard case .upstreamFailed = observer.summaries.first?.outcome else {
            return XCTFail("traced as \(String(describing: observer.summaries.first?.outcome))")
        }
    }

    func testUpstreamThatClosesBeforeRespondingGets502() throws {
        try makeClient()
        try send(.POST, "/x", headers: [("Content-Length", "1")], body: ["x"])
        try upstreams.channels[0].close().wait()
        XCTAssertEqual(status(of: try clientParts()), 502)
    }

    func testStalePooledConnectionIsRetriedOnceForIdempotentRequests() throws {
        try makeClient()
        try send()
        try respond()
        _ = try clientParts()
        try send()
        try upstreams.channels[0].close().wait()  // the upstream had closed the pooled connection
        XCTAssertEqual(upstreams.channels.count, 2, "a fresh connection is opened")
        try respond(1)
        XCTAssertEqual(status(of: try clientParts()), 200)
    }

    /// A chunked request's last chunk went to the closed connection: sending the head again would
    /// leave the upstream waiting for a body, so it is answered 502 instead of retried.
    func testAChunkedRequestIsNotRetriedOnAFreshConnection() throws {
        try makeClient()
        try send()
        try respond()
        _ = try clientParts()
        try send(.PUT, "/x", headers: [("Transfer-Encoding", "chunked")], body: [])
        try upstreams.channels[0].close().wait()
        XCTAssertEqual(upstreams.channels.count, 1, "no fresh connection")
        XCTAssertEqual(status(of: try clientParts()), 502)
    }

    func testFirstByteTimeoutAnswers504() throws {
        try makeClient()
        try send()
        loop.advanceTime(by: .seconds(9))
        XCTAssertNil(status(of: try clientParts()))
        loop.advanceTime(by: .seconds(2))
        XCTAssertEqual(status(of: try clientParts()), 504)
        XCTAssertFalse(upstreams.channels[0].isActive, "the upstream connection is closed")
    }

    func testIdleUpstreamMidStreamCutsTheClientConnection() throws {
        try makeClient()
        try send()
        try respond(headers: [("Transfer-Encoding", "chunked")], body: ["a"], end: false)
        loop.advanceTime(by: .seconds(21))
        XCTAssertFalse(client.isActive)
        XCTAssertFalse(upstreams.channels[0].isActive)
        if case .upstreamTimeout = observer.summaries.first?.outcome {} else { XCTFail("\(observer.summaries)") }
    }

    func testStreamedBodyOverTheLimitAnswers413AndClosesTheUpstream() throws {
        try makeClient { $0.maxBodyBytes = 4 }
        try send(.POST, "/x", headers: [("Transfer-Encoding", "chunked")], body: ["abc", "def"], end: false)
        XCTAssertEqual(status(of: try clientParts()), 413)
        XCTAssertFalse(upstreams.channels[0].isActive)
    }

    func testClientDisconnectMidResponseClosesTheUpstream() throws {
        try makeClient()
        try send()
        try respond(headers: [("Transfer-Encoding", "chunked")], body: ["a"], end: false)
        try client.close().wait()
        XCTAssertFalse(upstreams.channels[0].isActive)
        XCTAssertEqual(observer.summaries.first?.outcome, .clientAborted)
    }

    // MARK: Connection lifecycle

    func testIdleKeepAliveConnectionIsClosedAfterTheTimeout() throws {
        try makeClient()
        try send()
        try respond()
        _ = try clientParts()
        loop.advanceTime(by: .seconds(29))
        XCTAssertTrue(client.isActive)
        loop.advanceTime(by: .seconds(2))
        XCTAssertFalse(client.isActive)
    }

    func testQuiesceClosesAfterTheInFlightExchange() throws {
        try makeClient()
        try send()
        client.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertTrue(client.isActive, "the in-flight exchange goes on")
        try respond()
        let parts = try clientParts()
        guard case .head(let head) = parts.first else { return XCTFail("no response") }
        XCTAssertEqual(head.headers["connection"], ["close"])
        XCTAssertFalse(client.isActive)
    }

    // MARK: Framing and the upstream pool (no response for a request nobody sent)

    /// Raw bytes the proxy wrote to the client since the last call.
    private func clientBytes() throws -> String {
        var text = ""
        while let bytes = try client.readOutbound(as: ByteBuffer.self) { text += String(buffer: bytes) }
        return text
    }

    func testABodyNamedInConnectionStillGoesUpstreamAsOneFramedRequest() throws {
        try makeClient()
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        try send(.POST, "/attack", headers: [("Connection", "keep-alive, Content-Length"), ("Content-Length", "\(smuggled.utf8.count)")],
                 body: [smuggled])
        let parts = try upstreamParts()
        let heads = parts.compactMap { part -> String? in
            if case .head(let head) = part { return head.uri }
            return nil
        }
        XCTAssertEqual(heads, ["/attack"], "the body must not read as a second request upstream")
        guard case .end = parts.last else { return XCTFail("the request is not delimited upstream: \(parts)") }
    }

    func testUpstreamConnectionWithBytesBehindTheResponseIsNotPooled() throws {
        try makeClient()
        try send()
        var bytes = Wire.bytes(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "2"]))
        bytes.writeString("okHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
        try upstreams.channels[0].writeInbound(bytes)
        XCTAssertEqual(bodyText(of: try clientParts()), "ok")
        XCTAssertFalse(upstreams.channels[0].isActive, "a connection with an unasked-for response is closed")
        try send()
        XCTAssertEqual(upstreams.channels.count, 2, "the next request gets a fresh connection")
        try respond(1, body: ["r2"])
        XCTAssertEqual(bodyText(of: try clientParts()), "r2")
    }

    func testUpstreamSwitchingProtocolsUnaskedGets502AndIsNotPooled() throws {
        try makeClient()
        try send()
        try upstreams.channels[0].writeInbound(
            Wire.bytes(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: ["Upgrade": "x"])))
        XCTAssertEqual(status(of: try clientParts()), 502)
        XCTAssertFalse(upstreams.channels[0].isActive)
    }

    func testHTTP10RequestWithTransferEncodingIsRefused() throws {
        try makeClient()
        try clientDecoder.expectResponse(to: .POST)
        try client.writeInbound(ByteBuffer(string: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"))
        XCTAssertEqual(status(of: try clientParts()), 400)
        XCTAssertEqual(upstreams.channels.count, 0)
        XCTAssertFalse(client.isActive)
    }

    func testH2CUpgradeIsIgnoredAndTheRequestServedOverHTTP11() throws {
        try makeClient()
        try send(headers: [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQ")])
        guard case .head(let head)? = try upstreamParts().first else { return XCTFail("not forwarded") }
        XCTAssertFalse(head.headers.contains(name: "upgrade"))
        try respond()
        XCTAssertEqual(status(of: try clientParts()), 200)
    }

    // MARK: Request buffering and Expect

    func testSmallBodyIsReadWholeBeforeAnUpstreamConnectionIsTaken() throws {
        try makeClient { $0.requestBufferingBytes = 64 }
        try send(.POST, "/upload", headers: [("Content-Length", "6")], body: ["abc"], end: false)
        XCTAssertEqual(upstreams.channels.count, 0, "a slow upload holds no upstream connection")
        try sendBody("def")
        XCTAssertEqual(upstreams.channels.count, 1)
        let parts = try upstreamParts()
        XCTAssertEqual(parts.compactMap { if case .body(let b) = $0 { return String(buffer: b) } else { return nil } }.joined(), "abcdef")
        guard case .end = parts.last else { return XCTFail("request not ended upstream") }
    }

    func testChunkedUploadStreamsFromItsFirstChunkWhateverTheBuffer() throws {
        try makeClient { $0.requestBufferingBytes = 64 }
        try send(.POST, "/upload", headers: [("Transfer-Encoding", "chunked")], body: ["abc"], end: false)
        XCTAssertEqual(upstreams.channels.count, 1, "a chunked upload is streamed as it arrives")
        let body = try upstreamParts().compactMap { if case .body(let b) = $0 { return String(buffer: b) } else { return nil } }
        XCTAssertEqual(body.joined(), "abc")
    }

    func testLargeDeclaredBodyStreamsAtOnce() throws {
        try makeClient { $0.requestBufferingBytes = 4 }
        try send(.POST, "/upload", headers: [("Content-Length", "6")], body: ["abc"], end: false)
        XCTAssertEqual(upstreams.channels.count, 1)
    }

    func testExpectContinueIsAnsweredBeforeTheBodyIsSent() throws {
        try makeClient { $0.requestBufferingBytes = 64 }
        try client.writeInbound(ByteBuffer(string: "POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"))
        XCTAssertEqual(try clientBytes(), "HTTP/1.1 100 Continue\r\n\r\n")
        try client.writeInbound(ByteBuffer(string: "ok"))
        guard case .head(let head)? = try upstreamParts().first else { return XCTFail("not forwarded") }
        XCTAssertFalse(head.headers.contains(name: "expect"), "the proxy answered the expectation itself")
    }

    func testUnknownExpectationGets417() throws {
        try makeClient()
        try send(.POST, "/x", headers: [("Expect", "something-else"), ("Content-Length", "1")], body: ["x"])
        XCTAssertEqual(status(of: try clientParts()), 417)
        XCTAssertEqual(upstreams.channels.count, 0)
    }

    // MARK: Client timeouts

    func testConnectionThatSendsNothingIsClosedSilentlyAtTheHeaderTimeout() throws {
        try makeClient()
        loop.advanceTime(by: .seconds(14))
        XCTAssertTrue(client.isActive)
        loop.advanceTime(by: .seconds(2))
        XCTAssertFalse(client.isActive)
        XCTAssertEqual(try clientBytes(), "")
    }

    func testIncompleteHeadGets408AtTheHeaderTimeout() throws {
        try makeClient()
        loop.advanceTime(by: .seconds(10))
        try client.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHo"))
        loop.advanceTime(by: .seconds(14))
        XCTAssertTrue(client.isActive, "the header timeout counts from the head's first byte")
        try client.writeInbound(ByteBuffer(string: "s"))
        loop.advanceTime(by: .seconds(2))
        XCTAssertTrue(try clientBytes().hasPrefix("HTTP/1.1 408 "))
        XCTAssertFalse(client.isActive)
        XCTAssertEqual(upstreams.channels.count, 0)
    }

    func testPausedRequestBodyGets408AtTheBodyTimeout() throws {
        try makeClient()
        try send(.POST, "/upload", headers: [("Transfer-Encoding", "chunked")], body: ["a"], end: false)
        loop.advanceTime(by: .seconds(20))
        try sendBody("b")
        loop.advanceTime(by: .seconds(20))
        XCTAssertNil(status(of: try clientParts()), "each read restarts the body timeout")
        loop.advanceTime(by: .seconds(6))
        XCTAssertEqual(status(of: try clientParts()), 408)
        XCTAssertFalse(upstreams.channels[0].isActive)
    }

    func testClientThatTakesNothingIsCutAtTheSendTimeout() throws {
        try makeClient { $0.sendTimeout = .seconds(5) }
        try send()
        try respond(headers: [("Transfer-Encoding", "chunked")], body: ["a"], end: false)
        client.isWritable = false
        client.pipeline.fireChannelWritabilityChanged()
        loop.advanceTime(by: .seconds(4))
        XCTAssertTrue(client.isActive)
        loop.advanceTime(by: .seconds(2))
        XCTAssertFalse(client.isActive)
        XCTAssertFalse(upstreams.channels[0].isActive)
        XCTAssertEqual(observer.summaries.first?.outcome, .clientAborted)
    }

    func testQuiesceClosesAnIdleConnectionAtOnce() throws {
        try makeClient()
        client.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertFalse(client.isActive)
    }

    // MARK: WebSocket tunnels

    private static let handshake =
        "GET /ws/chat HTTP/1.1\r\nHost: proxy\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Session-ID: s1\r\n\r\n"
    private static let switching =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"

    /// Raw bytes the proxy wrote to upstream `index` since the last call.
    private func upstreamBytes(_ index: Int = 0) throws -> String {
        var text = ""
        while let bytes = try upstreams.channels[index].readOutbound(as: ByteBuffer.self) { text += String(buffer: bytes) }
        return text
    }

    /// Sends the handshake, answers 101 with `firstFrame` right behind it, and returns what the upstream got.
    private func openTunnel(firstFrame: String = "") throws -> String {
        try client.writeInbound(ByteBuffer(string: Self.handshake))
        let upstream = upstreams.channels.count - 1
        let forwarded = try upstreamBytes(upstream)
        try upstreams.channels[upstream].writeInbound(ByteBuffer(string: Self.switching + firstFrame))
        return forwarded
    }

    func testAWebSocketHandshakeKeepsItsUpgradeFieldsUpstreamAndThe101OpensATunnel() throws {
        try makeClient()
        let forwarded = try openTunnel(firstFrame: "\u{81}\u{02}hi")
        let lines = forwarded.components(separatedBy: "\r\n")
        XCTAssertEqual(lines.first, "GET /ws/chat HTTP/1.1")
        XCTAssertTrue(lines.contains("Upgrade: websocket"), forwarded)
        XCTAssertTrue(lines.contains("Connection: upgrade"), forwarded)
        XCTAssertTrue(lines.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), forwarded)
        XCTAssertTrue(lines.contains("Sec-WebSocket-Version: 13"), forwarded)
        XCTAssertTrue(lines.contains { $0.hasPrefix("X-Request-ID: ") }, forwarded)
        XCTAssertFalse(lines.contains { $0.lowercased().hasPrefix("connection: keep-alive") }, forwarded)

        XCTAssertEqual(try clientBytes(), Self.switching + "\u{81}\u{02}hi", "the 101 goes back unchanged, the first frame behind it")
        let masked = "\u{81}\u{85}abcd" + "xyzzy"
        try client.writeInbound(ByteBuffer(string: masked))
        XCTAssertEqual(try upstreamBytes(), masked, "client bytes go upstream as they came")
        try upstreams.channels[0].writeInbound(ByteBuffer(string: "\u{81}\u{03}one"))
        try upstreams.channels[0].writeInbound(ByteBuffer(string: "\u{81}\u{03}two"))
        XCTAssertEqual(try clientBytes(), "\u{81}\u{03}one\u{81}\u{03}two")
        XCTAssertTrue(observer.summaries.isEmpty, "the exchange lasts as long as the tunnel")

        try upstreams.channels[0].close().wait()
        XCTAssertFalse(client.isActive, "the upstream closing ends the tunnel")
        let summary = try XCTUnwrap(observer.summaries.first)
        XCTAssertEqual(summary.status, 101)
        XCTAssertEqual(summary.outcome, .completed)
        XCTAssertEqual(summary.tunnel?.bytesFromClient, masked.utf8.count)
        XCTAssertEqual(summary.tunnel?.bytesFromUpstream, ("\u{81}\u{02}hi" + "\u{81}\u{03}one\u{81}\u{03}two").utf8.count)
        XCTAssertEqual(summary.tunnel?.closedIdle, false)
    }

    func testTheClientClosingATunnelClosesTheUpstreamAndIsNoAbort() throws {
        try makeClient()
        _ = try openTunnel()
        _ = try clientBytes()
        try client.close().wait()
        XCTAssertFalse(upstreams.channels[0].isActive)
        XCTAssertEqual(observer.summaries.first?.outcome, .completed)
        XCTAssertNotNil(observer.summaries.first?.tunnel)
    }

    func testADeclinedUpgradeIsAnOrdinaryResponseAndItsUpstreamConnectionIsNotReused() throws {
        try makeClient()
        try clientDecoder.expectResponse(to: .GET)
        try client.writeInbound(ByteBuffer(string: Self.handshake))
        _ = try upstreamBytes()
        try respond(status: .forbidden, body: ["no"])
        let parts = try clientParts()
        XCTAssertEqual(status(of: parts), 403)
        XCTAssertEqual(bodyText(of: parts), "no")
        XCTAssertTrue(client.isActive, "the client connection goes on")
        XCTAssertFalse(upstreams.channels[0].isActive, "a connection asked to upgrade is not pooled")
        XCTAssertNil(observer.summaries.first?.tunnel)
        try send()
        XCTAssertEqual(upstreams.channels.count, 2)
    }

    func testTunnelReadsAreHeldEachWayWhileTheOtherSideCannotTakeMore() throws {
        try makeClient()
        _ = try openTunnel()
        let handler = try upstreams.channels[0].pipeline.syncOperations.handler(type: UpstreamHandler.self)
        client.isWritable = false
        client.pipeline.fireChannelWritabilityChanged()
        XCTAssertFalse((handler.owner?.mayReadUpstream) ?? true, "upstream reads wait for the client")
        client.isWritable = true
        client.pipeline.fireChannelWritabilityChanged()
        XCTAssertTrue((handler.owner?.mayReadUpstream) ?? false)

        // Client reads wait while the upstream cannot take more.
        var reads = 0
        let counter = ReadCounter { reads += 1 }
        try client.pipeline.syncOperations.addHandler(counter, position: .first)
        upstreams.channels[0].isWritable = false
        client.read()
        XCTAssertEqual(reads, 0, "held")
        upstreams.channels[0].isWritable = true
        upstreams.channels[0].pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(reads, 1, "resumed once the upstream can take more")
    }

    func testAnIdleTunnelIsClosedAtTheWebSocketIdleTimeoutAndTrafficKeepsItOpen() throws {
        try makeClient { $0.webSocketIdleTimeout = .seconds(50) }
        _ = try openTunnel()
        loop.advanceTime(by: .seconds(40))
        try client.writeInbound(ByteBuffer(string: "\u{89}\u{80}abcd"))  // a ping
        loop.advanceTime(by: .seconds(40))
        XCTAssertTrue(client.isActive, "40 s after the last byte")
        try upstreams.channels[0].writeInbound(ByteBuffer(string: "\u{8A}\u{00}"))  // its pong
        loop.advanceTime(by: .seconds(49))
        XCTAssertTrue(client.isActive)
        loop.advanceTime(by: .seconds(2))
        XCTAssertFalse(client.isActive)
        XCTAssertFalse(upstreams.channels[0].isActive)
        XCTAssertEqual(observer.summaries.first?.tunnel?.closedIdle, true)
        XCTAssertEqual(observer.summaries.first?.outcome, .completed)
    }

    func testUpgradesBeyondMaxWebSocketConnectionsGet503AndADeclinedOneGivesItsSlotBack() throws {
        try makeClient { $0.maxWebSocketConnections = 1 }
        try clientDecoder.expectResponse(to: .GET)
        try client.writeInbound(ByteBuffer(string: Self.handshake))
        try respond(status: .forbidden, body: ["no"])
        XCTAssertEqual(status(of: try clientParts()), 403)
        _ = try openTunnel()  // the declined upgrade gave its slot back: this one gets it
        XCTAssertTrue(try clientBytes().hasPrefix("HTTP/1.1 101"))

        try makeClient { $0.maxWebSocketConnections = 0 }
        try clientDecoder.expectResponse(to: .GET)
        try client.writeInbound(ByteBuffer(string: Self.handshake))
        XCTAssertEqual(status(of: try clientParts()), 503)
        XCTAssertTrue(upstreams.channels.isEmpty, "nothing went upstream")
        XCTAssertFalse(client.isActive, "closed after the 503, as after every refusal (no stale timers)")
    }

    func testATunnelGoesOnThroughShutdownsGraceAndCountsAsClosedAtShutdownWhenCut() throws {
        try makeClient()
        _ = try openTunnel()
        _ = try clientBytes()
        client.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertTrue(client.isActive, "a tunnel goes on through the grace")
        try client.writeInbound(ByteBuffer(string: "late"))
        XCTAssertEqual(try upstreamBytes(), "late")
        client.pipeline.fireUserInboundEventTriggered(ShutdownGraceOver())  // what the listener does once the grace is over
        try client.close().wait()
        XCTAssertFalse(upstreams.channels[0].isActive)
        XCTAssertEqual(observer.summaries.first?.tunnel?.closedAtShutdown, true)
        XCTAssertEqual(observer.summaries.first?.outcome, .completed)
    }

    func testATunnelItsClientClosesDuringTheGraceCountsAsClosedNotCutAtShutdown() throws {
        try makeClient()
        _ = try openTunnel()
        _ = try clientBytes()
        client.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        try client.close().wait()  // the client leaves on its own before the grace is over
        XCTAssertEqual(observer.summaries.first?.tunnel?.closedAtShutdown, false)
    }

    func testTheTapSeesTunnelBytesOnlyOnceTheyHaveBeenSentOn() throws {
        try makeClient()
        let tap = TunnelTap()
        observer.tap = tap
        _ = try openTunnel()
        _ = try clientBytes()  // the 101
        var seen: [String] = []
        tap.sawTunnelBytes = { [unowned self] bytes, fromClient in
            let sentOn = fromClient ? try! self.upstreamBytes() : try! self.clientBytes()
            seen.append("\(fromClient ? "up" : "down") \(String(buffer: bytes)), already sent on: \(sentOn == String(buffer: bytes))")
        }
        try client.writeInbound(ByteBuffer(string: "hello"))
        try upstreams.channels[0].writeInbound(ByteBuffer(string: "world"))
        XCTAssertEqual(seen, ["up hello, already sent on: true", "down world, already sent on: true"], "tracing is never between a message and its forwarding")
    }

    func testOtherUpgradesGet501() throws {
        try makeClient()
        try clientDecoder.expectResponse(to: .GET)
        try client.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo/2\r\n\r\n"))
        XCTAssertEqual(status(of: try clientParts()), 501)
        XCTAssertTrue(upstreams.channels.isEmpty)
    }
}

#if canImport(Glibc)
import Glibc
#endif
