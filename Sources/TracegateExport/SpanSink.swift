/// Takes OTLP/JSON trace export requests: any OpenTelemetry backend, or an MLflow experiment
/// (`MLflowSpanSink`).
public protocol SpanSink: Sendable {
    /// Posts one `ExportTraceServiceRequest` (many traces); throws `DeliveryError`.
    func postSpans(_ otlpJSON: [UInt8]) async throws
}
