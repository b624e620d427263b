/// Spans into one MLflow experiment (its `/v1/traces` with the experiment header), the tracking
/// server's failures told as `DeliveryError`. Any other failure passes through as it is: the
/// exporter takes it for a refusal of the batch, as it does `rejected`.
struct MLflowSpanSink: SpanSink {
    let server: any MLflowTraceSink
    let experimentID: String

    func postSpans(_ otlpJSON: [UInt8]) async throws {
        do {
            try await server.postTraces(otlpJSON, experimentID: experimentID)
        } catch MLflowError.unreachable(let why) {
            throw DeliveryError.unreachable(why)
        } catch MLflowError.unavailable(let status, let body) {
            throw DeliveryError.unavailable(status: status, body: body)
        } catch MLflowError.rejected(let status, let body) {
            throw DeliveryError.rejected(status: status, body: body)
        }
    }
}
