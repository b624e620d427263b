/// The one table of settings. Parsing, `--help` and validation are all driven by it:
/// adding a setting means adding one entry here and one field to `TracegateSettings`.
/// Defaults and keys must match proxy.conf.example (a test checks this).
enum SettingsTable {
    static let all: [SettingDescriptor] = [
        // Listeners
        .init("listen", \.listen, .hostPort, default: .value("0.0.0.0:8080"),
              doc: "Public address clients connect to (host:port; [::1]:8080 for IPv6)."),
        .init("admin_listen", \.adminListen, .hostPort, default: .value("127.0.0.1:9090"),
              doc: "Admin address for /healthz and /readyz. Never served on the public port."),
        .init("tls_cert_file", \.tlsCertFile, .optionalPath, default: .value(""),
              doc: "PEM certificate chain for HTTPS on the public listener (with tls_key_file); reloaded on SIGHUP."),
        .init("tls_key_file", \.tlsKeyFile, .optionalPath, default: .value(""),
              doc: "PEM private key for tls_cert_file; reloaded on SIGHUP."),
        .init("threads", \.threads, .integer(0...256), default: .value("0"),
              doc: "Event-loop threads; 0 means one per CPU this process may use."),
        .init("cpu_affinity", \.cpuAffinity, .oneOf(CPUAffinity.self), default: .value("auto"),
              doc: "auto: when the process may use exactly as many CPUs as there are event loops (two or more), pin each loop to a CPU of its own (as nginx's worker_cpu_affinity auto); off: leave placement to the scheduler."),
        // Upstream
        .init("upstream", \.upstream, .upstreamURL, default: .required,
              doc: "The backend every request is forwarded to: http(s)://host[:port][/base-path]. Required."),
        .init("preserve_host", \.preserveHost, .bool, default: .value("false"),
              doc: "Send the client's Host header upstream instead of the upstream's own host."),
        .init("upstream_tls_verify", \.upstreamTLSVerify, .bool, default: .value("true"),
              doc: "Verify the upstream's TLS certificate (https upstreams)."),
        .init("upstream_ca_file", \.upstreamCAFile, .optionalPath, default: .value(""),
              doc: "PEM file of CA certificates to trust for the upstream; empty means the system store."),
        .init("upstream_pool_size", \.upstreamPoolSize, .integer(0...100_000), default: .value("64"),
              doc: "Idle keep-alive connections kept per event-loop thread."),
        // Timeouts
        .init("connect_timeout", \.connectTimeout, .duration, default: .value("5s"),
              doc: "Time allowed to open a connection (TCP and TLS) to the upstream; then 504."),
        .init("first_byte_timeout", \.firstByteTimeout, .duration, default: .value("300s"),
              doc: "Time from the end of the request to the first byte of the response; then 504."),
        .init("idle_timeout", \.idleTimeout, .duration, default: .value("300s"),
              doc: "Longest silence between two reads from the upstream once its response started."),
        .init("client_keepalive_timeout", \.clientKeepaliveTimeout, .duration, default: .value("75s"),
              doc: "How long an idle client keep-alive connection is kept open."),
        .init("client_header_timeout", \.clientHeaderTimeout, .duration, default: .value("60s"),
              doc: "Time a client has to send a whole request head (from its first byte, or from the connection's start for the first request); then 408."),
        .init("client_body_timeout", \.clientBodyTimeout, .duration, default: .value("60s"),
              doc: "Longest pause between two reads of a request body; then 408."),
        .init("send_timeout", \.sendTimeout, .duration, default: .value("60s"),
              doc: "Longest time a client (or a WebSocket tunnel's upstream) may take nothing of what is sent to it; then the connection is closed."),
        .init("websocket_idle_timeout", \.webSocketIdleTimeout, .duration, default: .value("1h"),
              doc: "A WebSocket tunnel with no byte either way for this long is closed."),
        .init("shutdown_grace", \.shutdownGrace, .duration, default: .value("30s"),
              doc: "On SIGTERM/SIGINT: how long in-flight exchanges (streams included) may take to finish."),
        // Limits
        .init("max_header_bytes", \.maxHeaderBytes,
              .size(between: (1 << 10, "1KiB"), and: (80 << 10, "80KiB")), default: .value("32KiB"),
              doc: "Largest request head (request line and headers) accepted; larger gets 431. At most 80KiB."),
        .init("max_body_bytes", \.maxBodyBytes, .sizeOrUnlimited, default: .value("64MiB"),
              doc: "Largest request body accepted; larger gets 413. 0 means no limit."),
        .init("max_connections", \.maxConnections, .integer(0...1_000_000), default: .value("0"),
              doc: "Client connections open at once; a connection beyond it is answered 503 and closed. 0: derived from the open-file limit."),
        .init("max_websocket_connections", \.maxWebSocketConnections, .integer(0...1_000_000), default: .value("1000"),
              doc: "WebSocket tunnels open at once; an upgrade beyond it is answered 503. 0: WebSocket upgrades are refused."),
        .init("request_buffering", \.requestBuffering,
              .size(between: (0, "0"), and: (64 << 20, "64MiB")), default: .value("64KiB"),
              doc: "Request bodies declared up to this size are read whole before an upstream connection is taken; larger and chunked ones stream. 0: always stream."),
        // Headers
        .init("request_id_header", \.requestIDHeader, .headerName, default: .value("X-Request-ID"),
              doc: "Header carrying the request id; passed through, or generated (a UUID) when absent."),
        .init("forwarded_headers", \.forwardedHeaders, .oneOf(ForwardedHeaders.self), default: .value("x-forwarded"),
              doc: "Forwarding headers added to each request: x-forwarded, via, both or none."),
        .init("server_timing", \.serverTiming, .bool, default: .value("true"),
              doc: "Add a Server-Timing header to responses: tracegate's own time, connect time and upstream time."),
        // Tracing
        .init("user_header", \.userHeader, .headerName, default: .value("X-User-ID"),
              doc: "Request header whose value becomes the trace's user (metadata mlflow.trace.user)."),
        .init("session_header", \.sessionHeader, .headerName, default: .value("X-Session-ID"),
              doc: "Request header whose value becomes the trace's session (metadata mlflow.trace.session)."),
        .init("user_from", \.userFrom, .identitySources(forSessions: false), default: .value(""),
              doc: "Where the trace's user comes from: sources tried in order, the first valid value wins (header:NAME, cookie:NAME, query:NAME, jwt:CLAIM, jwt:COOKIE/CLAIM, body:PATH, baggage:KEY). Empty: header:<user_header>."),
        .init("session_from", \.sessionFrom, .identitySources(forSessions: true), default: .value(""),
              doc: "Where the trace's session comes from, as user_from, plus chain:previous_response_id (a Responses API turn joins the session of the response it continues). Empty: header:<session_header>."),
        .init("identity_hash", \.identityHash, .oneOf(IdentityHash.self), default: .value("off"),
              doc: "off, or hmac-sha256: users and sessions reach MLflow as the HMAC-SHA-256 of their value (64 hex digits) under the key in identity_hash_key_file, so they group without being readable."),
        .init("identity_hash_key_file", \.identityHashKeyFile, .optionalPath, default: .value(""),
              doc: "File holding the identity_hash key: at least 16 characters (one trailing newline is ignored), such as the output of openssl rand -hex 32."),
        .init("trace_id_header", \.traceIDHeader, .headerName, default: .value("X-MLflow-Trace-Id"),
              doc: "Response header carrying the trace id, so an application can attach feedback to it."),
        .init("capture_max_body_bytes", \.captureMaxBodyBytes,
              .size(between: (0, "0"), and: (64 << 20, "64MiB")), default: .value("256KiB"),
              doc: "Bytes of each request and response body kept in the trace; longer bodies are marked truncated."),
        .init("capture_memory_limit", \.captureMemoryLimit,
              .size(between: (0, "0"), and: (16 << 30, "16GiB")), default: .value("16MiB"),
              doc: "Body bytes that captures may hold together until their traces are built; beyond it, bodies are kept truncated."),
        .init("capture_queue_size", \.captureQueueSize, .integer(1...100_000), default: .value("1000"),
              doc: "Captured exchanges waiting to be made into traces; while it is full (CPU saturated), new exchanges are forwarded untraced and counted."),
        .init("trace_error_on_4xx", \.traceErrorOn4xx, .bool, default: .value("false"),
              doc: "Mark traces of 4xx responses as ERROR (5xx, upstream failures and aborts always are)."),
        .init("feedback_path", \.feedbackPath, .optionalFeedbackPath, default: .value(""),
              doc: "Path on the public listener where clients POST feedback on an exchange (e.g. /_tracegate/feedback); it becomes an MLflow assessment. Never forwarded upstream. Empty: off."),
        .init("feedback_cors_origins", \.feedbackCORSOrigins, .originList, default: .value(""),
              doc: "Web origins whose pages may post feedback from a browser, cookies included: https://chat.example.com,http://localhost:3000. Posts from other origins are refused."),
        .init("feedback_rate_limit", \.feedbackRateLimit, .integer(1...100_000), default: .value("50"),
              doc: "Feedback posts accepted per second (bursts up to twice as many); beyond it 429."),
        .init("trace_tags", \.traceTags, .tagList, default: .value(""),
              doc: "Tags added to every trace: environment=production,app.version=1.2.3."),
        .init("trace_source_name", \.traceSourceName, .optionalSourceName, default: .value(""),
              doc: "Name in MLflow's Source column (trace metadata mlflow.source.name). Empty: the route's name, or the upstream's host:port for requests no route took."),
        .init("trace_source_type", \.traceSourceType, .sourceType, default: .value("PROXY"),
              doc: "Type in MLflow's Source column (trace metadata mlflow.source.type)."),
        .init("trace_names", \.traceNames, .oneOf(TraceNames.self), default: .value("operation"),
              doc: "Trace names: operation (recognised chat calls read like chat.completions gpt-4o-mini, other requests METHOD /path) or request (always METHOD /path)."),
        .init("tag_headers", \.tagHeaders, .headerTagList, default: .value(""),
              doc: "Request headers copied into trace tags: X-Tenant=tenant,X-App-Version=app.version."),
        .init("export_batch_size", \.exportBatchSize, .integer(1...1000), default: .value("100"),
              doc: "Traces per OTLP request to the tracking server."),
        .init("export_batch_delay", \.exportBatchDelay, .duration, default: .value("1s"),
              doc: "Longest time a finished trace waits before its batch is sent."),
        .init("export_concurrency", \.exportConcurrency, .integer(1...64), default: .value("4"),
              doc: "Trace-info calls (StartTraceV3, one per trace) in flight at once."),
        .init("trace_file", \.traceFile, .optionalPath, default: .value("tracegate-traces.jsonl"),
              doc: "Without a tracking server, traces are appended here (JSON lines); send them later with `tracegate push`. Empty: traces are not kept."),
        .init("trace_file_max_bytes", \.traceFileMaxBytes, .size(between: (1 << 20, "1MiB"), and: (1 << 40, "1TiB")), default: .value("100MiB"),
              doc: "Size at which the trace file is renamed PATH.1 (older ones PATH.2 …) and a new one started; lines are never split."),
        .init("trace_file_keep", \.traceFileKeep, .integer(1...1000), default: .value("5"),
              doc: "Rotated trace files kept; the oldest beyond this is deleted. The files take at most trace_file_max_bytes × (trace_file_keep + 1)."),
        .init("export_backlog_limit", \.exportBacklogLimit, .integer(1...100_000_000), default: .value("10000"),
              doc: "Traces a tracking server that answers may owe (queued or spooled) before new exchanges are forwarded untraced until it is below 90% of this; an unreachable server's traces are all spooled."),
        .init("export_drain_timeout", \.exportDrainTimeout, .duration, default: .value("5s"),
              doc: "At shutdown, how long delivery of the traces in memory may go on; the rest goes to the spool."),
        .init("spool_dir", \.spoolDir, .optionalPath, default: .value("tracegate-spool"),
              doc: "Directory of the on-disk spool: traces the tracking server could not take yet, replayed in order when it is back and at start-up. One per process. Empty: no spool (traces beyond the memory queue are dropped and counted)."),
        .init("spool_max_bytes", \.spoolMaxBytes, .size(between: (1 << 20, "1MiB"), and: (1 << 40, "1TiB")), default: .value("1GiB"),
              doc: "Size cap of each spool queue (spans owed, trace info owed); beyond it the oldest traces are dropped, counted and logged."),
        // Privacy and sampling
        .init("capture", \.capture, .oneOf(CaptureMode.self), default: .value("full"),
              doc: "What traces hold: full (bodies included), metadata (no bodies) or off (no traces at all)."),
        .init("redact_headers", \.redactHeaders, .headerNameList,
              default: .value("Authorization,Proxy-Authorization,Cookie,Set-Cookie,X-Api-Key,Api-Key,X-Goog-Api-Key"),
              doc: "Headers whose values are never exported, even when named in tag_headers."),
        .init("redact_json_fields", \.redactJSONFields, .jsonPathList, default: .value(""),
              doc: "JSON fields of captured bodies replaced by \"[REDACTED]\": dotted paths, * for any one key or index, ** for any depth, e.g. user.email,messages.*.name,**.password."),
        .init("redact_builtin", \.redactBuiltin, .builtinRedactionList, default: .value("api-keys"),
              doc: "Built-in patterns redacted from bodies, tags and paths: api-keys, emails (comma-separated), or none."),
        .init("redact_regex", \.redactRegex, .optionalRegex, default: .value(""),
              doc: "A regular expression whose matches in bodies, tags and paths are replaced by [REDACTED]."),
        .init("sample_ratio", \.sampleRatio, .ratio, default: .value("1"),
              doc: "Share of exchanges traced, from 0 to 1. Errors are always traced."),
        .init("propagate_trace_context", \.propagateTraceContext, .bool, default: .value("true"),
              doc: "Continue an incoming W3C traceparent (the trace takes the caller's trace id) and send a traceparent upstream naming tracegate's span for the upstream call, so the upstream's own spans nest under it."),
        .init("force_trace_header", \.forceTraceHeader, .headerName, default: .value("X-Tracegate-Force-Trace"),
              doc: "A request carrying this header (any value but 0 or false) is always traced."),
        // MLflow (MLflow's own environment variable names)
        .init("mlflow_tracking_uri", \.mlflowTrackingURI, .optionalTrackingURI, default: .value(""),
              environment: "MLFLOW_TRACKING_URI",
              doc: "MLflow tracking server, e.g. http://127.0.0.1:5000. Empty: traces go to trace_file."),
        .init("mlflow_experiment_name", \.mlflowExperimentName, .optionalText, default: .value(""),
              environment: "MLFLOW_EXPERIMENT_NAME",
              doc: "Experiment receiving the traces; created when missing."),
        .init("mlflow_experiment_id", \.mlflowExperimentID, .optionalExperimentID, default: .value(""),
              environment: "MLFLOW_EXPERIMENT_ID",
              doc: "Experiment id, instead of a name. With neither, the Default experiment (0)."),
        .init("mlflow_tracking_username", \.mlflowTrackingUsername, .optionalText, default: .value(""),
              environment: "MLFLOW_TRACKING_USERNAME", doc: "With the password: HTTP Basic authentication."),
        .init("mlflow_tracking_password", \.mlflowTrackingPassword, .optionalText, default: .value(""),
              environment: "MLFLOW_TRACKING_PASSWORD", doc: "Password for HTTP Basic authentication."),
        .init("mlflow_tracking_token", \.mlflowTrackingToken, .optionalText, default: .value(""),
              environment: "MLFLOW_TRACKING_TOKEN", doc: "Bearer token, used when no username is set."),
        // OpenTelemetry (the standard OTEL_* variable names)
        .init("otel_exporter_otlp_endpoint", \.otelEndpoint, .optionalHTTPURL, default: .value(""),
              environment: "OTEL_EXPORTER_OTLP_ENDPOINT",
              doc: "OpenTelemetry backend or Collector (OTLP/HTTP); traces go to <endpoint>/v1/traces as well as to MLflow. Empty: no OpenTelemetry export."),
        .init("otel_exporter_otlp_traces_endpoint", \.otelTracesEndpoint, .optionalHTTPURL, default: .value(""),
              environment: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
              doc: "Full OTLP/HTTP traces URL, used as given; wins over otel_exporter_otlp_endpoint."),
        .init("otel_exporter_otlp_headers", \.otelHeaders, .keyValueList(what: "header"), default: .value(""),
              environment: "OTEL_EXPORTER_OTLP_HEADERS",
              doc: "Headers sent with every OTLP request: key=value pairs, comma-separated, values percent-encoded."),
        .init("otel_service_name", \.otelServiceName, .optionalText, default: .value(""),
              environment: "OTEL_SERVICE_NAME", doc: "service.name of the exported spans; default tracegate."),
        .init("otel_resource_attributes", \.otelResourceAttributes, .keyValueList(what: "resource attribute"), default: .value(""),
              environment: "OTEL_RESOURCE_ATTRIBUTES",
              doc: "Resource attributes of the exported spans: key=value pairs, comma-separated, values percent-encoded."),
        // Logging
        .init("access_log", \.accessLog, .oneOf(AccessLogFormat.self), default: .value("text"),
              doc: "Access log to standard output, one line per request: text, json or off."),
        .init("log_level", \.logLevel, .oneOf(LogLevel.self), default: .value("info"),
              doc: "Diagnostic log level on standard error: trace, debug, info, notice, warning, error, critical."),
    ]

    /// Flag and environment variable naming the config file; not a setting of the file itself.
    static let configFlag = "--config"
    static let configEnvironmentVariable = "TRACEGATE_CONFIG"
    /// Prefix reserved for tracegate: unknown variables starting with it are refused.
    static let environmentPrefix = "TRACEGATE_"

    static let byKey: [String: SettingDescriptor] =
        Dictionary(uniqueKeysWithValues: all.map { ($0.key, $0) })
    static let byFlag: [String: SettingDescriptor] =
        Dictionary(uniqueKeysWithValues: all.map { ($0.flag, $0) })
    static let byEnvironmentVariable: [String: SettingDescriptor] =
        Dictionary(uniqueKeysWithValues: all.map { ($0.environmentVariable, $0) })

    /// A settings value with every default applied; required settings keep their placeholder.
    static func defaults() -> TracegateSettings {
        var settings = TracegateSettings()
        for setting in all {
            guard case .value(let text) = setting.defaultValue else { continue }
            do {
                try setting.apply(text, to: &settings)
            } catch {
                preconditionFailure("settings table: default '\(text)' of \(setting.key) does not parse")
            }
        }
        return settings
    }
}
