import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1
import Prometheus
import TracegateProxy
import TracegateTrace

/// Prometheus metrics of the data plane and of trace delivery, served on the admin listener's `/metrics`.
///
/// Label values are bounded: methods outside the common set count as `other`, statuses by class,
/// and at most `maxModels` distinct model names (then `other`). No user, session or request id is a label.
public final class TracegateMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    static let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other"]
    static let statusClasses = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"]
    static let maxModels = 32
    /// The per-exchange figures, one set per event loop (`ExchangeCounters`), added up at each scrape.
    private let exchangeShards = NIOLockedValueBox([ExchangeCounters]())
    let connectionsRefused: Counter
    let acceptErrors: Counter
    /// Indexed by `clientTimeoutKinds`.
    let clientTimeouts: [Counter]
    static let clientTimeoutKinds = ["header", "body", "send"]
    let tunnelsOpen: Gauge
    /// Indexed by `tunnelDirections`.
    let tunnelBytes: [Counter]
    static let tunnelDirections = ["client_to_upstream", "upstream_to_client"]
    /// Indexed by `tunnelDirections`.
    let tunnelFrames: [Counter]
    /// Indexed by `tunnelEnds`.
    let tunnelsClosed: [Counter]
    static let tunnelEnds = ["closed", "idle", "shutdown", "send_timeout"]

    private let delivery = NIOLockedValueBox(DeliveryCounters())
    private let deliverySource = NIOLockedValueBox<(@Sendable () -> DeliverySnapshot)?>(nil)
    private let tokenCounters = NIOLockedValueBox([String: (input: Counter, output: Counter)]())

    public init() {
        let registry = self.registry
        connectionsRefused = registry.makeCounter(
            name: "tracegate_connections_refused_total", help: "Connections answered 503 because max_connections were open.")
        acceptErrors = registry.makeCounter(
            name: "tracegate_accept_errors_total",
            help: "Failed accepts (file-descriptor limit, out of memory); each pauses accepting for 250ms.")
        clientTimeouts = Self.clientTimeoutKinds.map { kind in
            registry.makeCounter(
                name: "tracegate_client_timeouts_total", labels: [("kind", kind)],
                help: "Client connections cut by client_header_timeout, client_body_timeout or send_timeout.")
        }
        tunnelsOpen = registry.makeGauge(name: "tracegate_websocket_tunnels_open", help: "WebSocket tunnels open now.")
        tunnelBytes = Self.tunnelDirections.map { direction in
            registry.makeCounter(
                name: "tracegate_websocket_bytes_total", labels: [("direction", direction)],
                help: "Bytes passed through WebSocket tunnels, counted when each tunnel closes.")
        }
        tunnelFrames = Self.tunnelDirections.map { direction in
            registry.makeCounter(
                name: "tracegate_websocket_frames_total", labels: [("direction", direction)],
                help: "WebSocket frames (data and control) passed through tunnels, counted when each tunnel closes.")
        }
        tunnelsClosed = Self.tunnelEnds.map { end in
            registry.makeCounter(
                name: "tracegate_websocket_tunnels_closed_total", labels: [("end", end)],
                help: "WebSocket tunnels closed: by either side (closed), by websocket_idle_timeout (idle), at shutdown once shutdown_grace was over (shutdown), or because the upstream took nothing for send_timeout (send_timeout).")
        }
        delivery.withLockedValue { $0 = DeliveryCounters(registry: registry) }
    }

    /// Counters for the exchanges of one more event loop.
    func makeExchangeCounters() -> ExchangeCounters {
        let counters = ExchangeCounters()
        exchangeShards.withLockedValue { $0.append(counters) }
        return counters
    }

    /// Where the delivery figures come from (the tracing pipeline); read at each scrape.
    func setDeliverySource(_ source: @escaping @Sendable () -> DeliverySnapshot) {
        deliverySource.withLockedValue { $0 = source }
    }

    /// Counts a recognised chat exchange's token usage under its model.
    func countTokens(model: String?, input: Int, output: Int) {
        let counters: (input: Counter, output: Counter) = tokenCounters.withLockedValue { counters in
            var label = model ?? "unknown"
            if counters[label] == nil && counters.count >= Self.maxModels { label = "other" }
            if let existing = counters[label] { return existing }
            let made = (
                input: registry.makeCounter(
                    name: "tracegate_tokens_total", labels: [("model", label), ("kind", "input")],
                    help: "Token usage of recognised chat exchanges, by model."),
                output: registry.makeCounter(
                    name: "tracegate_tokens_total", labels: [("model", label), ("kind", "output")],
                    help: "Token usage of recognised chat exchanges, by model.")
            )
            counters[label] = made
            return made
        }
        if input > 0 { counters.input.increment(by: Int64(input)) }
        if output > 0 { counters.output.increment(by: Int64(output)) }
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> [UInt8] {
        if let snapshot = deliverySource.withLockedValue({ $0 })?() {
            delivery.withLockedValue { $0.update(to: snapshot) }
        }
        let exchanges = ExchangeCounters.exposition(of: exchangeShards.withLockedValue { $0 })
        return registry.emitToBuffer() + Array(exchanges.utf8)
    }

    /// The index in `methods`, without building the method's name.
    static func methodIndex(_ method: HTTPMethod) -> Int {
        switch method {
        case .GET: 0
        case .POST: 1
        case .PUT: 2
        case .DELETE: 3
        case .PATCH: 4
        case .HEAD: 5
        case .OPTIONS: 6
        default: 7
        }
    }

    static func statusClassIndex(_ status: Int?) -> Int {
        guard let status, status >= 100, status < 600 else { return statusClasses.count - 1 }
        return status / 100 - 1
    }
}

/// Trace delivery figures at one moment; totals only ever grow.
struct DeliverySnapshot: Sendable {
    var queued = 0
    var exported = 0
    var retries = 0
    var dropped = 0
    var rejected = 0
    var traceInfoFailures = 0
    var spooled = 0
    var replayed = 0
    var spoolTraces = 0
    var spoolBytes = 0
    var feedbackAccepted = 0
    var feedbackDelivered = 0
    var feedbackRejected = 0
    var feedbackPending = 0
}

/// Prometheus counters mirroring delivery totals kept elsewhere: each scrape adds what grew since the last.
private struct DeliveryCounters {
    private var queue: Gauge?
    private var spoolTraces: Gauge?
    private var spoolBytes: Gauge?
    private var feedbackPending: Gauge?
    private var counters: [(Counter, KeyPath<DeliverySnapshot, Int> & Sendable)] = []
    private var last = DeliverySnapshot()

    init() {}

    init(registry: PrometheusCollectorRegistry) {
        queue = registry.makeGauge(name: "tracegate_export_queue_traces", help: "Traces waiting in memory to be exported.")
        spoolTraces = registry.makeGauge(name: "tracegate_spool_traces", help: "Traces waiting in the on-disk spool.")
        spoolBytes = registry.makeGauge(name: "tracegate_spool_bytes", help: "Bytes of the on-disk spool.")
        feedbackPending = registry.makeGauge(
            name: "tracegate_feedback_pending", help: "Feedback queued on disk, not yet delivered to MLflow (fresh or waiting for its trace).")
        func counter(_ name: String, _ help: String, _ key: KeyPath<DeliverySnapshot, Int> & Sendable) -> (Counter, KeyPath<DeliverySnapshot, Int> & Sendable) {
            (registry.makeCounter(name: name, help: help), key)
        }
        counters = [
            counter("tracegate_traces_exported_total", "Traces whose spans MLflow stored.", \.exported),
            counter("tracegate_trace_export_retries_total", "Export attempts retried after a failure.", \.retries),
            counter("tracegate_traces_dropped_total", "Traces given up: exchanges not captured while trace building was behind, traces dropped from full queues or spools.", \.dropped),
            counter("tracegate_traces_rejected_total", "Traces MLflow refused as invalid (set aside in the dead-letter file).", \.rejected),
            counter("tracegate_traces_spooled_total", "Traces written to the on-disk spool.", \.spooled),
            counter("tracegate_traces_replayed_total", "Spooled traces delivered.", \.replayed),
            counter(
                "tracegate_trace_info_failures_total",
                "Traces whose StartTraceV3 (client_request_id, metadata) failed or was given up.", \.traceInfoFailures),
            counter("tracegate_feedback_accepted_total", "Feedback posts accepted (202) and queued.", \.feedbackAccepted),
            counter("tracegate_feedback_delivered_total", "Feedback stored in MLflow as assessments.", \.feedbackDelivered),
            counter(
                "tracegate_feedback_rejected_total", "Feedback set aside: refused by MLflow, or its trace never arrived.",
                \.feedbackRejected),
        ]
    }

    mutating func update(to snapshot: DeliverySnapshot) {
        queue?.set(Double(snapshot.queued))
        spoolTraces?.set(Double(snapshot.spoolTraces))
        spoolBytes?.set(Double(snapshot.spoolBytes))
        feedbackPending?.set(Double(snapshot.feedbackPending))
        for (counter, key) in counters {
            let grown = snapshot[keyPath: key] - last[keyPath: key]
            if grown > 0 { counter.increment(by: Int64(grown)) }
        }
        last = snapshot
    }
}
