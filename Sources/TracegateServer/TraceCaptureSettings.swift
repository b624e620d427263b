import NIOCore
import NIOHTTP1
import NIOPosix
import TracegateExport
import TracegateProxy
import TracegateTrace

/// What the tracing observer reads from requests and how much it keeps.
public struct TraceCaptureSettings: Sendable {
    /// The user and session sources that read the request head (`IdentityResolver.headSources`).
    public var userHeadSources: [IdentitySource] = [.header("X-User-ID")]
    public var sessionHeadSources: [IdentitySource] = [.header("X-Session-ID")]
    public var requestIDHeader = "X-Request-ID"
    /// Response header carrying the trace id; empty disables it.
    public var traceIDResponseHeader = "X-MLflow-Trace-Id"
    /// Bytes of each body kept for the trace (the exchange itself is never affected).
    public var maxCapturedBodyBytes = 64 * 1024
    /// Request headers copied into trace tags: (header name, tag key).
    public var headerTags: [(header: String, tag: String)] = []
    /// The upstream as shown in traces, per route (0: the default upstream, `i`: route `i - 1`'s).
    public var upstreams: [String] = [""]
    /// Share of exchanges traced (errors are kept whatever the draw).
    public var sampleRatio = 1.0
    /// A request header that forces a trace (any value but `0` or `false`).
    public var forceTraceHeader = "X-Tracegate-Force-Trace"
    /// Continue an incoming W3C `traceparent` and send one upstream naming tracegate's span.
    public var propagatesTraceContext = true
    /// Requests under this path are tracegate's own (`feedback_path`) and are not traced.
    public var untracedPath: String?

    public init() {}
}
