import NIOCore
import NIOPosix
import XCTest

@testable import TracegateExport
@testable import TracegateProxy
@testable import TracegateServer
@testable import TracegateTrace

/// The capture policy, in process: which exchanges are captured, which go untraced (and are
/// counted), and which are sampled.
final class TraceObserverTests: XCTestCase {
    private func head(_ target: String, headers: [(String, String)] = []) throws -> RequestHead {
        var text = "GET \(target) HTTP/1.1\r\nHost: backend\r\nX-Request-ID: req-1\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        var bytes = ByteBuffer(string: text + "\r\n")
        var parser = HeadParser(requestIDHeader: "X-Request-ID", maxHeadBytes: 32 * 1024)
        let length = try XCTUnwrap(try parser.headLength(in: &bytes))
        return try parser.parseRequest(bytes.readSlice(length: length)!)
    }

    private func summary(of head: RequestHead, outcome: ExchangeOutcome = .completed) -> ExchangeSummary {
        ExchangeSummary(
            requestID: "req-1", method: head.method, target: head.uri, clientAddress: "10.0.0.1", status: 200,
            requestBodyBytes: 0, responseBodyBytes: 0, startedAtEpochNanos: 0, duration: .milliseconds(3),
            timeToFirstByte: .milliseconds(2), outcome: outcome)
    }

    private func observer(
        queueCapacity: Int = 10, configure: (inout TraceCaptureSettings) -> Void = { _ in }
    ) -> (TraceObserver, CaptureQueue<CapturedExchange>) {
        var settings = TraceCaptureSettings()
        configure(&settings)
        let captures = CaptureQueue<CapturedExchange>(capacity: queueCapacity)
        return (TraceObserver(settings: settings, captures: captures, budget: CaptureBudget(limit: 1 << 20)), captures)
    }

    func testAnEndedExchangeIsCapturedAndQueuedForTheBuilder() throws {
        let (observer, captures) = observer()
        let request = try head("/v1/chat/completions")
        let tap = try XCTUnwrap(observer.exchangeStarted(request, requestID: "req-1"))
        observer.exchangeFinished(summary(of: request), tap: tap)
        let queued = captures.takeAll()
        XCTAssertEqual(queued.map(\.requestID), ["req-1"])
        XCTAssertEqual(queued.first?.target, "/v1/chat/completions")
        XCTAssertEqual(queued.first?.sampled, true)
    }

    func testAnEventLoopsCapturesComeBackToItToBeFreedWhenItStartsAnotherExchange() throws {
        let (root, captures) = observer()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let observer = try XCTUnwrap(root.forEventLoop(group.next()) as? TraceObserver)
        let returns = try XCTUnwrap(observer.returns)
        let request = try head("/v1/chat/completions")
        observer.exchangeFinished(summary(of: request), tap: observer.exchangeStarted(request, requestID: "req-1"))
        let batch = captures.takeBatch()
        XCTAssertEqual(batch.elements.map(\.requestID), ["req-1"])
        batch.sendHome()
        XCTAssertEqual(returns.count, 1, "built, the capture waits for its loop, not freed by the builder")
        _ = observer.exchangeStarted(try head("/next"), requestID: "req-2")
        XCTAssertEqual(returns.count, 0, "freed by the loop as it starts its next exchange")
        XCTAssertNil(root.returns, "the listener's own instance has no loop to send captures back to")
    }

    func testTurnsEndedByOneReadAreQueuedInTheirOrder() throws {
        let (observer, captures) = observer()
        let request = try head("/chat", headers: [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        let tap = try XCTUnwrap(observer.exchangeStarted(request, requestID: "req-1") as? TraceTap)
        var response = ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        var parser = HeadParser(requestIDHeader: "X-Request-ID", maxHeadBytes: 32 * 1024)
        let length = try XCTUnwrap(try parser.headLength(in: &response))
        tap.tunnelOpened(try parser.parseResponse(response.readSlice(length: length)!), request: request, requestID: "req-1", route: UpstreamRoute(index: 0))
        let key: [UInt8] = [1, 2, 3, 4]
        let said = ["one", "two", "three", "four"]
        // Masked text frames, as a client sends them (RFC 6455 §5.2), all in one read.
        var frames: [UInt8] = []
        for text in said {
            let payload = Array(text.utf8)
            frames += [0x81, 0x80 | UInt8(payload.count)] + key
            for (index, byte) in payload.enumerated() { frames.append(byte ^ key[index % 4]) }
        }
        tap.tunnelBytes(ByteBuffer(bytes: frames), fromClient: true)
        tap.tunnelClosed(TunnelFigures(), outcome: .completed)
        let turns = captures.takeAll().compactMap(\.webSocketTurn)
        XCTAssertEqual(turns.map(\.number), [1, 2, 3, 4])
        XCTAssertEqual(turns.map { String(decoding: $0.clientMessages[0].data, as: UTF8.self) }, said)
    }

    func testTracegatesOwnPathIsNeverCaptured() throws {
        let (observer, captures) = observer { $0.untracedPath = "/tracegate/feedback" }
        let request = try head("/tracegate/feedback?x=1")
        XCTAssertNil(observer.exchangeStarted(request, requestID: "req-1"))
        observer.exchangeFinished(summary(of: request), tap: nil)
        XCTAssertEqual(captures.count, 0)
        XCTAssertEqual(captures.refusedCount, 0, "not traced by design: not counted as dropped")
        XCTAssertNotNil(observer.exchangeStarted(try head("/tracegate/feedbackish"), requestID: "req-2"), "a path under it only")
    }

    func testWhileTheQueueIsFullExchangesAreForwardedUntracedAndCounted() throws {
        let (observer, captures) = observer(queueCapacity: 1)
        let first = try head("/a")
        observer.exchangeFinished(summary(of: first), tap: observer.exchangeStarted(first, requestID: "req-1"))
        XCTAssertEqual(captures.count, 1)
        let second = try head("/b")
        XCTAssertNil(observer.exchangeStarted(second, requestID: "req-2"), "no tap: no trace id header, nothing kept")
        observer.exchangeFinished(summary(of: second), tap: nil)
        XCTAssertEqual(captures.refusedCount, 1)
        _ = captures.takeAll()
        XCTAssertNotNil(observer.exchangeStarted(try head("/c"), requestID: "req-3"), "captured again once the builder took the queue")
    }

    func testSamplingDrawsPerRequestAndTheForceHeaderOverridesIt() throws {
        let (observer, _) = observer { $0.sampleRatio = 0 }
        let plain = try XCTUnwrap(observer.exchangeStarted(try head("/x"), requestID: "req-1") as? TraceTap)
        XCTAssertFalse(plain.sampled, "captured (an error is still traced) but not sampled")
        XCTAssertTrue(plain.responseHeaders.isEmpty, "no trace id header for an exchange that may not be traced")
        let forced = try XCTUnwrap(
            observer.exchangeStarted(try head("/x", headers: [("X-Tracegate-Force-Trace", "1")]), requestID: "req-2") as? TraceTap)
        XCTAssertTrue(forced.sampled)
        XCTAssertFalse(forced.responseHeaders.isEmpty)
        for value in ["0", "false", "FALSE", ""] {
            XCTAssertFalse(TraceTap.isSampled(0, ratio: 0, forced: value), "force header \(value)")
        }
        XCTAssertTrue(TraceTap.isSampled(.max, ratio: 1, forced: nil))
        XCTAssertTrue(TraceTap.isSampled(0, ratio: 0.5, forced: nil), "the lowest draw is under any ratio")
        XCTAssertFalse(TraceTap.isSampled(.max, ratio: 0.5, forced: nil), "the highest draw is over it")
    }
}
