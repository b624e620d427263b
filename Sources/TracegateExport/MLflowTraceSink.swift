/// The calls of an MLflow tracking server an exporter makes; `MLflowClient` is the real one.
public protocol MLflowTraceSink: Sendable {
    /// Posts an OTLP/JSON export request into the experiment; throws `MLflowError`.
    func postTraces(_ otlpJSON: [UInt8], experimentID: String) async throws
    /// Posts one StartTraceV3 body; returns the echoed trace info. Throws `MLflowError`.
    func startTrace(_ body: [UInt8]) async throws -> [UInt8]
}

extension MLflowClient: MLflowTraceSink {}
