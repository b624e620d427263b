import Logging
import NIOConcurrencyHelpers
import TracegateTrace

/// Where batches of traces go; `MLflowClient` is the real one, tests use fakes.
public protocol TraceSink: Sendable {
    /// Posts an OTLP/JSON export request; throws `MLflowError`.
    func postTraces(_ otlpJSON: [UInt8], experimentID: String) async throws
    /// Posts one StartTraceV3 body; returns the echoed trace info.
    func startTrace(_ body: [UInt8]) async throws -> [UInt8]
}
