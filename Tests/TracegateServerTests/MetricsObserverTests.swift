import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import TracegateProxy
@testable import TracegateServer

final class MetricsObserverTests: XCTestCase {
    private func summary(
        _ method: HTTPMethod, status: Int?, duration: TimeAmount, timeToFirstByte: TimeAmount? = nil,
        requestBytes: Int = 0, responseBytes: Int = 0, streamed: Bool = false
    ) -> ExchangeSummary {
        var summary = ExchangeSummary(
            requestID: "req", method: method, target: "/", clientAddress: nil, status: status,
            requestBodyBytes: requestBytes, responseBodyBytes: responseBytes, startedAtEpochNanos: 0,
            duration: duration, timeToFirstByte: timeToFirstByte, outcome: .completed)
        summary.streamed = streamed
        return summary
    }

    private func head(_ method: HTTPMethod) throws -> RequestHead {
        var bytes = ByteBuffer(string: "\(method.rawValue) / HTTP/1.1\r\nHost: backend\r\n\r\n")
        var parser = HeadParser(requestIDHeader: "X-Request-ID", maxHeadBytes: 32 * 1024)
        let length = try XCTUnwrap(try parser.headLength(in: &bytes))
        return try parser.parseRequest(bytes.readSlice(length: length)!)
    }

    /// Each event loop counts into its own `ExchangeCounters`; a scrape adds them all up, and the
    /// text is what a Prometheus parser reads: one HELP and TYPE per family, cumulative buckets.
    func testEveryLoopsExchangesAddUpInOneExposition() throws {
        let metrics = TracegateMetrics()
        let shared = MetricsObserver(metrics: metrics)
        let first = shared.forEventLoop(EmbeddedEventLoop())
        let second = shared.forEventLoop(EmbeddedEventLoop())
        XCTAssertFalse(first === second, "every loop gets an observer of its own")

        _ = first.exchangeStarted(try head(.GET), requestID: "a")
        first.exchangeFinished(
            summary(.GET, status: 200, duration: .microseconds(500), timeToFirstByte: .microseconds(400), responseBytes: 10),
            tap: nil)
        _ = second.exchangeStarted(try head(.GET), requestID: "b")
        second.exchangeFinished(
            summary(.GET, status: 204, duration: .milliseconds(1), timeToFirstByte: .microseconds(900)), tap: nil)
        _ = second.exchangeStarted(try head(.POST), requestID: "c")
        second.responseStarted(streamed: true)
        second.exchangeFinished(
            summary(.init(rawValue: "PROPFIND"), status: 502, duration: .seconds(3), requestBytes: 7, streamed: true),
            tap: nil)
        _ = first.exchangeStarted(try head(.GET), requestID: "still open")

        let text = String(decoding: metrics.exposition(), as: UTF8.self)
        let lines = text.split(separator: "\n").map(String.init)
        for expected in [
            #"tracegate_requests_total{method="GET",status_class="2xx"} 2"#,
            #"tracegate_requests_total{method="other",status_class="5xx"} 1"#,
            #"tracegate_requests_total{method="POST",status_class="2xx"} 0"#,
            // 1 ms is in the 0.001 bucket: a bucket counts what is at most its bound.
            #"tracegate_request_duration_seconds_bucket{le="0.001"} 2"#,
            #"tracegate_request_duration_seconds_bucket{le="2.5"} 2"#,
            #"tracegate_request_duration_seconds_bucket{le="5.0"} 3"#,
            #"tracegate_request_duration_seconds_bucket{le="+Inf"} 3"#,
            "tracegate_request_duration_seconds_sum 3.0015",
            "tracegate_request_duration_seconds_count 3",
            "tracegate_upstream_time_to_first_byte_seconds_sum 0.0013",
            #"tracegate_upstream_time_to_first_byte_seconds_bucket{le="0.001"} 2"#,
            "tracegate_upstream_time_to_first_byte_seconds_count 2",
            "tracegate_requests_in_flight 1",
            "tracegate_streams_open 0",
            "tracegate_request_body_bytes_total 7",
            "tracegate_response_body_bytes_total 10",
        ] {
            XCTAssertTrue(lines.contains(expected), "missing \(expected) in\n\(text)")
        }
        XCTAssertEqual(lines.count, Set(lines).count, "no line twice")
        for family in [
            "tracegate_requests_total", "tracegate_request_duration_seconds", "tracegate_upstream_time_to_first_byte_seconds",
            "tracegate_requests_in_flight", "tracegate_streams_open", "tracegate_request_body_bytes_total",
            "tracegate_response_body_bytes_total",
        ] {
            XCTAssertEqual(lines.filter { $0.hasPrefix("# TYPE \(family) ") }.count, 1, family)
            XCTAssertEqual(lines.filter { $0.hasPrefix("# HELP \(family) ") }.count, 1, family)
        }
    }

    /// Each common method counts under its own label, in the order of `TracegateMetrics.methods`.
    func testEveryCommonMethodHasItsOwnLabel() {
        for (index, name) in TracegateMetrics.methods.dropLast().enumerated() {
            XCTAssertEqual(TracegateMetrics.methodIndex(HTTPMethod(rawValue: name)), index, name)
        }
        XCTAssertEqual(TracegateMetrics.methodIndex(.CONNECT), TracegateMetrics.methods.count - 1)
    }

    /// A WebSocket tunnel leaves the in-flight gauge when it opens and is counted as a tunnel instead.
    func testATunnelIsNotARequestInFlight() throws {
        let metrics = TracegateMetrics()
        let observer = MetricsObserver(metrics: metrics).forEventLoop(EmbeddedEventLoop())
        _ = observer.exchangeStarted(try head(.GET), requestID: "ws")
        observer.tunnelOpened()
        var text = String(decoding: metrics.exposition(), as: UTF8.self)
        XCTAssertTrue(text.contains("\ntracegate_requests_in_flight 0\n"), text)
        XCTAssertTrue(text.contains("\ntracegate_websocket_tunnels_open 1.0\n"), text)
        var closed = summary(.GET, status: 101, duration: .seconds(1))
        closed.tunnel = TunnelFigures()
        observer.exchangeFinished(closed, tap: nil)
        text = String(decoding: metrics.exposition(), as: UTF8.self)
        XCTAssertTrue(text.contains("\ntracegate_requests_in_flight 0\n"), text)
        XCTAssertTrue(text.contains("\ntracegate_websocket_tunnels_open 0.0\n"), text)
    }
}
