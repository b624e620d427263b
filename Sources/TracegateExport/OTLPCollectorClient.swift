import AsyncHTTPClient
import NIOCore
import NIOHTTP1

/// Posts OTLP/HTTP JSON trace export requests to any OpenTelemetry backend or Collector
/// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), with the configured headers (`OTEL_EXPORTER_OTLP_HEADERS`).
public struct OTLPCollectorClient: SpanSink {
    public let tracesEndpoint: String
    private let headers: [(String, String)]
    private let http: HTTPClient
    private let timeout: TimeAmount

    public init(tracesEndpoint: String, headers: [(String, String)], http: HTTPClient, timeout: TimeAmount = .seconds(10)) {
        self.tracesEndpoint = tracesEndpoint
        self.headers = headers
        self.http = http
        self.timeout = timeout
    }

    public func postSpans(_ otlpJSON: [UInt8]) async throws {
        var request = HTTPClientRequest(url: tracesEndpoint)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: otlpJSON))
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await http.execute(request, timeout: timeout)
            body = try await response.body.collect(upTo: 1024 * 1024)
        } catch {
            throw DeliveryError.unreachable("\(error)")
        }
        switch response.status.code {
        case 200..<300: return
        case 408, 429, 500..<600: throw DeliveryError.unavailable(status: Int(response.status.code), body: String(buffer: body))
        default: throw DeliveryError.rejected(status: Int(response.status.code), body: String(buffer: body))
        }
    }
}
