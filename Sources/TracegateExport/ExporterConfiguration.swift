import Logging
import NIOConcurrencyHelpers
import TracegateTrace

/// How traces are batched and delivered.
public struct ExporterConfiguration: Sendable {
    /// A batch is sent when it holds this many traces…
    public var maxBatchTraces = 100
    /// …or when its oldest trace has waited this long.
    public var maxBatchDelay: Duration = .seconds(1)
    /// Traces held in memory (waiting for spans, and separately for trace info). Beyond it they go
    /// to the spool; without one, the oldest are dropped and counted.
    public var maxQueuedTraces = 1_000
    /// StartTraceV3 calls in flight at once (MLflow).
    public var startTraceConcurrency = 4
    /// Whether a span continuing a caller's trace names the caller's span as its parent (OTLP
    /// backends); MLflow keeps tracegate's span as the root (see `OTLPJSON.exportRequest`).
    public var linksParentSpans = false
    public var serviceName = "tracegate"
    public var resourceAttributes: [String: String] = [:]
    public var initialBackoff: Duration = .milliseconds(200)
    public var maxBackoff: Duration = .seconds(30)
    /// At shutdown, how long delivery of what is in memory may go on before the rest is spooled.
    public var drainTimeout: Duration = .seconds(5)

    public init() {}
}
