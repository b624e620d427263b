import TracegateTrace

/// Every tracegate setting, resolved from flags, environment, config file and defaults.
///
/// The initial values written below are placeholders only: `SettingsTable` holds the real
/// defaults and `SettingsLoader` applies every one of them, so a loaded value never comes from here.
public struct TracegateSettings: Sendable, Equatable {
    /// Public address clients connect to.
    public var listen: HostPort = .placeholder
    /// Admin address for /healthz and /readyz.
    public var adminListen: HostPort = .placeholder
    /// Event-loop threads; 0 means one per usable CPU (resolved by the caller).
    public var threads: Int = 0
    /// Whether event loops are pinned to CPUs of their own.
    public var cpuAffinity: CPUAffinity = .auto
    /// The backend every request is forwarded to.
    public var upstream: UpstreamURL = .placeholder
    /// Send the client's Host header upstream instead of the upstream's own host.
    public var preserveHost: Bool = false
    /// Verify the upstream's TLS certificate (https upstreams).
    public var upstreamTLSVerify: Bool = false
    /// PEM file of CA certificates to trust for the upstream; nil means the system store.
    public var upstreamCAFile: String? = nil
    /// HTTPS on the public listener: certificate chain and private key (PEM), both or neither.
    public var tlsCertFile: String? = nil
    public var tlsKeyFile: String? = nil
    /// Idle keep-alive connections kept per event-loop thread.
    public var upstreamPoolSize: Int = 0
    /// Time allowed to open a connection (TCP and TLS) to the upstream.
    public var connectTimeout: Duration = .zero
    /// Time from the end of the request to the first byte of the response.
    public var firstByteTimeout: Duration = .zero
    /// Longest silence between two reads from the upstream once its response started.
    public var idleTimeout: Duration = .zero
    /// How long an idle client keep-alive connection is kept open.
    public var clientKeepaliveTimeout: Duration = .zero
    /// Time a client has to send a whole request head.
    public var clientHeaderTimeout: Duration = .zero
    /// Longest pause between two reads of a request body.
    public var clientBodyTimeout: Duration = .zero
    /// Longest time a client may take nothing of what is sent to it.
    public var sendTimeout: Duration = .zero
    /// A WebSocket tunnel with no byte either way for this long is closed.
    public var webSocketIdleTimeout: Duration = .zero
    /// How long in-flight exchanges may take to finish after SIGTERM/SIGINT.
    public var shutdownGrace: Duration = .zero
    /// Largest request head (request line and headers) accepted, in bytes.
    public var maxHeaderBytes: Int = 0
    /// Largest request body accepted, in bytes; nil means unlimited.
    public var maxBodyBytes: Int? = nil
    /// Client connections open at once; 0: derived from the open-file limit (`FileDescriptorLimit`).
    public var maxConnections: Int = 0
    /// WebSocket tunnels open at once; an upgrade beyond it is answered 503.
    public var maxWebSocketConnections: Int = 0
    /// Request bodies up to this many bytes are read whole before going upstream; 0: always stream.
    public var requestBuffering: Int = 0
    /// Header carrying the request id (a valid HTTP token).
    public var requestIDHeader: String = ""
    /// Forwarding headers added to each request.
    public var forwardedHeaders: ForwardedHeaders = .none
    /// Add `Server-Timing` to responses.
    public var serverTiming: Bool = false
    /// Request header carrying the user id.
    public var userHeader: String = ""
    /// Request header carrying the session id.
    public var sessionHeader: String = ""
    /// Response header carrying the trace id.
    public var traceIDHeader: String = ""
    /// Bytes of each body kept in a trace.
    public var captureMaxBodyBytes: Int = 0
    /// Body bytes all exchanges in flight may hold for their traces together.
    public var captureMemoryLimit: Int = 0
    /// Captured exchanges waiting for the trace builder.
    public var captureQueueSize: Int = 0
    /// Whether 4xx responses make a trace ERROR.
    public var traceErrorOn4xx: Bool = false
    /// Static tags on every trace.
    public var traceTags = NamedPairs([])
    /// MLflow's Source column; nil: the route's name, else the upstream's host:port.
    public var traceSourceName: String? = nil
    public var traceSourceType: String = ""
    public var traceNames: TraceNames = .operation
    /// Where the user and session come from, in order; empty: the `user_header` / `session_header`.
    public var userFrom: [IdentitySource] = []
    public var sessionFrom: [IdentitySource] = []
    public var identityHash: IdentityHash = .off
    public var identityHashKeyFile: String? = nil
    /// Where feedback is posted; nil: off.
    public var feedbackPath: String? = nil
    public var feedbackCORSOrigins: [String] = []
    public var feedbackRateLimit: Int = 0
    /// The contents of `identity_hash_key_file`, read when the settings are loaded.
    public var identityHashKey: [UInt8]? = nil

    /// The user sources in effect (`user_from`, else the `user_header`).
    public var userSources: [IdentitySource] { userFrom.isEmpty ? [.header(userHeader)] : userFrom }
    public var sessionSources: [IdentitySource] { sessionFrom.isEmpty ? [.header(sessionHeader)] : sessionFrom }
    /// Request headers copied into tags: (header, tag key).
    public var tagHeaders = NamedPairs([])
    /// Traces per OTLP request.
    public var exportBatchSize: Int = 0
    /// Longest wait before a batch is sent.
    public var exportBatchDelay: Duration = .zero
    /// StartTraceV3 calls in flight at once.
    public var exportConcurrency: Int = 0
    /// Traces an answering tracking server may owe before capture pauses.
    public var exportBacklogLimit: Int = 0
    /// At shutdown, how long delivery may go on before the rest is spooled.
    public var exportDrainTimeout: Duration = .zero
    /// The on-disk spool directory; nil means no spool.
    public var spoolDir: String? = nil
    /// Size cap of each spool queue.
    public var spoolMaxBytes: Int = 0
    /// What traces hold.
    public var capture: CaptureMode = .off
    /// Headers never exported.
    public var redactHeaders: [String] = []
    /// JSON field paths redacted from captured bodies.
    public var redactJSONFields: [String] = []
    /// Built-in redaction patterns.
    public var redactBuiltin: [BuiltinRedaction] = []
    /// A user regular expression redacted from bodies, tags and paths.
    public var redactRegex: String? = nil
    /// Share of exchanges traced (errors always are).
    public var sampleRatio: Double = 0
    /// Continue incoming W3C traceparent and propagate one upstream.
    public var propagateTraceContext: Bool = false
    /// A request header that forces a trace.
    public var forceTraceHeader: String = ""
    /// Where traces go when there is no tracking server; nil keeps none.
    public var traceFile: String? = nil
    /// Size at which the trace file is rotated.
    public var traceFileMaxBytes: Int = 0
    /// Rotated trace files kept (`PATH.1` … `PATH.N`).
    public var traceFileKeep: Int = 0
    /// MLflow tracking server; nil sends traces to `traceFile` instead.
    public var mlflowTrackingURI: String? = nil
    public var mlflowExperimentName: String? = nil
    public var mlflowExperimentID: String? = nil
    public var mlflowTrackingUsername: String? = nil
    public var mlflowTrackingPassword: String? = nil
    public var mlflowTrackingToken: String? = nil
    /// OpenTelemetry export, as the standard `OTEL_*` variables give it (see `openTelemetryExport`).
    public var otelEndpoint: String? = nil
    public var otelTracesEndpoint: String? = nil
    public var otelHeaders: String? = nil
    public var otelServiceName: String? = nil
    public var otelResourceAttributes: String? = nil

    /// Where and how traces go to an OpenTelemetry backend; nil when no endpoint is set.
    public var openTelemetryExport: OpenTelemetryExport? {
        // The lists were validated when loaded, so resolving cannot fail here.
        try? OpenTelemetryExport.resolve(
            endpoint: otelEndpoint, tracesEndpoint: otelTracesEndpoint, headers: otelHeaders,
            serviceName: otelServiceName, resourceAttributes: otelResourceAttributes)
    }
    /// `[route NAME]` sections of the config file, in file order.
    public var routes: [Route] = []
    /// Access log format on standard output.
    public var accessLog: AccessLogFormat = .off
    /// Diagnostic log level on standard error.
    public var logLevel: LogLevel = .info

    /// All defaults from the settings table, with the one required setting supplied.
    public static func defaults(upstream: UpstreamURL) -> TracegateSettings {
        var settings = SettingsTable.defaults()
        settings.upstream = upstream
        return settings
    }
}

/// Which forwarding headers tracegate adds to each request.
public enum ForwardedHeaders: String, Sendable, CaseIterable {
    /// X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host.
    case xForwarded = "x-forwarded"
    /// `Via: 1.1 tracegate`.
    case via
    /// Both of the above.
    case both
    /// No forwarding headers.
    case none
}

/// Whether user and session ids are pseudonymised before they leave.
public enum IdentityHash: String, Sendable, CaseIterable {
    case off
    /// HMAC-SHA-256 under the key in `identity_hash_key_file`, as 64 hex digits.
    case hmacSHA256 = "hmac-sha256"
}

/// How traces are named.
public enum TraceNames: String, Sendable, CaseIterable {
    /// Recognised chat calls after their operation and model (`chat.completions gpt-4o-mini`); the rest `METHOD /path`.
    case operation
    /// Always `METHOD /path`.
    case request
}

/// What a trace holds.
public enum CaptureMode: String, Sendable, CaseIterable {
    /// Bodies (capped) and metadata.
    case full
    /// Everything but the bodies.
    case metadata
    /// No traces at all.
    case off
}

/// Patterns tracegate knows how to redact without a regular expression from the user.
public enum BuiltinRedaction: String, Sendable, CaseIterable {
    /// API keys and tokens of the common shapes (sk-…, sk-ant-…, AKIA…, ghp_…, Bearer …, xox…-).
    case apiKeys = "api-keys"
    /// E-mail addresses.
    case emails
}

/// Event-loop placement: `auto` pins each loop to a CPU of its own when the process may use exactly
/// one CPU per loop.
public enum CPUAffinity: String, Sendable, CaseIterable {
    case auto, off
}

/// Format of the access log written to standard output.
public enum AccessLogFormat: String, Sendable, CaseIterable {
    case text, json, off
}

/// Diagnostic log level, from most to least verbose (tracegate's own, independent of swift-log).
public enum LogLevel: String, Sendable, CaseIterable, Comparable {
    case trace, debug, info, notice, warning, error, critical

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool {
        lhs.rank < rhs.rank
    }

    private var rank: Int {
        switch self {
        case .trace: 0
        case .debug: 1
        case .info: 2
        case .notice: 3
        case .warning: 4
        case .error: 5
        case .critical: 6
        }
    }
}
