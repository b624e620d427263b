import Atomics

/// The figures `TracegateMetrics` keeps for every exchange, as one event loop counts them: requests by
/// method and status class, the request-duration and time-to-first-byte histograms, the in-flight and
/// streaming gauges, and body bytes.
///
/// Only its own loop writes, with a relaxed load and store (no lock, no read-modify-write, no cache
/// line shared with anything else: the block is aligned to and padded out to whole 128-byte lines);
/// a scrape reads every loop's counters and adds them up. Counting through the shared Prometheus
/// objects instead took a lock per histogram and a contended atomic per counter and gauge on every
/// exchange.
final class ExchangeCounters: @unchecked Sendable {
    /// Upper bounds of the duration buckets, in nanoseconds (`le`), ascending; `+Inf` follows.
    static let bucketBoundsNanos: [Int64] = [
        1_000_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000, 100_000_000, 250_000_000, 500_000_000,
        1_000_000_000, 2_500_000_000, 5_000_000_000, 10_000_000_000, 30_000_000_000, 60_000_000_000,
        300_000_000_000,
    ]

    /// Where each figure sits in `slots`.
    enum Layout {
        static let requests = 0
        /// Requests are counted at `requests + method × statusClasses + status class`.
        static let statusClasses = TracegateMetrics.statusClasses.count
        static let requestCount = TracegateMetrics.methods.count * statusClasses
        /// A histogram: one count per bucket (`+Inf` last, not cumulative), then the sum in microseconds
        /// (room for 292,000 years of durations; nanoseconds would fill in months of long-lived tunnels).
        /// The count is the buckets' total.
        static let histogramSize = bucketBoundsNanos.count + 2
        static let duration = requests + requestCount
        static let timeToFirstByte = duration + histogramSize
        static let inFlight = timeToFirstByte + histogramSize
        static let streamsOpen = inFlight + 1
        static let requestBytes = streamsOpen + 1
        static let responseBytes = requestBytes + 1
        static let count = responseBytes + 1
    }

    /// Two cache lines on CPUs that fetch lines in adjacent pairs.
    private static let lineBytes = 128
    private let slots: UnsafeMutablePointer<UnsafeAtomic<Int>.Storage>
    private let bounds: UnsafeMutableBufferPointer<Int64>

    init() {
        let bytes = MemoryLayout<UnsafeAtomic<Int>.Storage>.stride * Layout.count
        let padded = (bytes + Self.lineBytes - 1) / Self.lineBytes * Self.lineBytes
        slots = UnsafeMutableRawPointer.allocate(byteCount: padded, alignment: Self.lineBytes)
            .bindMemory(to: UnsafeAtomic<Int>.Storage.self, capacity: Layout.count)
        slots.initialize(repeating: .init(0), count: Layout.count)
        bounds = .allocate(capacity: Self.bucketBoundsNanos.count)
        _ = bounds.initialize(from: Self.bucketBoundsNanos)
    }

    deinit {
        slots.deinitialize(count: Layout.count)
        UnsafeMutableRawPointer(slots).deallocate()
        bounds.deallocate()
    }

    /// Adds `amount` to a slot; the owning loop is its only writer, so load-then-store loses nothing.
    @inline(__always)
    func add(_ amount: Int, at slot: Int) {
        let atomic = UnsafeAtomic<Int>(at: slots + slot)
        atomic.store(atomic.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    /// The slot's value now; any thread.
    func value(at slot: Int) -> Int {
        UnsafeAtomic<Int>(at: slots + slot).load(ordering: .relaxed)
    }

    func countRequest(method: Int, statusClass: Int) {
        add(1, at: Layout.requests + method * Layout.statusClasses + statusClass)
    }

    /// Records a duration in the histogram starting at `histogram` (`Layout.duration` or `.timeToFirstByte`).
    func record(nanoseconds: Int64, in histogram: Int) {
        let nanoseconds = max(0, nanoseconds)
        var bucket = 0
        while bucket < bounds.count && nanoseconds > bounds[bucket] { bucket += 1 }
        add(1, at: histogram + bucket)
        add(Int(nanoseconds / 1_000), at: histogram + bounds.count + 1)
    }
}

extension ExchangeCounters {
    /// The Prometheus text exposition of `shards` added up.
    static func exposition(of shards: [ExchangeCounters]) -> String {
        func total(_ slot: Int) -> Int { shards.reduce(0) { $0 &+ $1.value(at: slot) } }
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        family(
            "tracegate_requests_total", "counter",
            "Requests answered, by method and status class (none: the client got no response head).")
        for (m, method) in TracegateMetrics.methods.enumerated() {
            for (s, statusClass) in TracegateMetrics.statusClasses.enumerated() {
                let slot = Layout.requests + m * Layout.statusClasses + s
                out += "tracegate_requests_total{method=\"\(method)\",status_class=\"\(statusClass)\"} \(total(slot))\n"
            }
        }
        func histogram(_ name: String, _ help: String, at base: Int) {
            family(name, "histogram", help)
            var cumulative = 0
            for (bucket, bound) in bucketBoundsNanos.enumerated() {
                cumulative &+= total(base + bucket)
                out += "\(name)_bucket{le=\"\(Double(bound) / 1e9)\"} \(cumulative)\n"
            }
            cumulative &+= total(base + bucketBoundsNanos.count)
            out += "\(name)_bucket{le=\"+Inf\"} \(cumulative)\n"
            out += "\(name)_sum \(Double(total(base + bucketBoundsNanos.count + 1)) / 1e6)\n"
            out += "\(name)_count \(cumulative)\n"
        }
        histogram(
            "tracegate_request_duration_seconds", "From the request head to the end of the response, as the client saw it.",
            at: Layout.duration)
        histogram(
            "tracegate_upstream_time_to_first_byte_seconds", "From the request head to the upstream's response head.",
            at: Layout.timeToFirstByte)
        family("tracegate_requests_in_flight", "gauge", "Exchanges being forwarded now.")
        out += "tracegate_requests_in_flight \(total(Layout.inFlight))\n"
        family("tracegate_streams_open", "gauge", "Exchanges streaming a chunked or close-delimited response (SSE) now.")
        out += "tracegate_streams_open \(total(Layout.streamsOpen))\n"
        family("tracegate_request_body_bytes_total", "counter", "Request body bytes received from clients.")
        out += "tracegate_request_body_bytes_total \(total(Layout.requestBytes))\n"
        family("tracegate_response_body_bytes_total", "counter", "Response body bytes sent to clients.")
        out += "tracegate_response_body_bytes_total \(total(Layout.responseBytes))\n"
        return out
    }
}
