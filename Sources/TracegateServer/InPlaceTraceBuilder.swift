import TracegateExport
import TracegateProxy
import TracegateTrace

/// A trace built on an event loop, waiting for the builder thread to write it to the trace file or
/// hand it to the exporters (both of which take locks or do I/O, so neither happens on an event loop).
struct BuiltTrace: Sendable {
    enum Output: Sendable {
        /// For the exporters.
        case record(TraceRecord)
        /// For the trace file.
        case line([UInt8])

        var lineBytes: Int {
            if case .line(let line) = self { return line.count }
            return 0
        }
    }

    var output: Output
    var route: UpstreamRoute
    /// For the token metrics, counted on the builder thread.
    var tokens: (model: String?, input: Int, output: Int)?
}

/// Builds a trace on the event loop that forwarded its exchange, when that loop has nothing else in
/// flight (`TraceObserver` decides when).
///
/// Why: on an idle loop, building in place costs less CPU than handing the capture to the builder
/// thread (its data is still in this CPU's cache), and it wakes no other thread. A builder thread
/// working while requests are forwarded competes with them for the CPUs even at idle priority: every
/// wake-up of an event loop, a client or an upstream on the CPU it occupies needs a preemption, and
/// that (measured at c=1 with wrk) tripled the p99 latency. While exchanges are in flight, captures
/// still go to the builder thread, which runs only on CPU time forwarding leaves.
///
/// Used only when building needs no state shared between traces (not with `chain:` session sources)
/// and for small captures: the event loop must never spend long on one trace.
struct InPlaceTraceBuilder: Sendable {
    /// Captured bodies larger than this (storage, both bodies) are built on the builder thread.
    static let maxBodyStorage = 16 * 1024

    let builder: TraceBuilder
    /// Whether traces go to the trace file (as lines) rather than to exporters (as records).
    let writesLines: Bool
    let built: CaptureQueue<BuiltTrace>
    let budget: CaptureBudget

    /// Whether `captured` may be built in place.
    func accepts(_ captured: CapturedExchange) -> Bool {
        captured.bodyStorage <= Self.maxBodyStorage && built.isAccepting
    }

    /// Builds `captured` (unless unsampled and not an error: then it is only let go) and queues the
    /// trace for the builder thread, which sends it back to `home` once handed on; releases its share of
    /// the capture budget.
    func build(_ captured: CapturedExchange, home: LoopReturns?) {
        defer { budget.release(captured.bodyStorage) }
        guard builder.traces(captured) else { return }
        let record = builder.record(for: captured)
        let output: BuiltTrace.Output = writesLines ? .line(TraceRecordJSON.line(record)) : .record(record)
        built.offer(
            BuiltTrace(output: output, route: UpstreamRoute(index: captured.routeIndex), tokens: record.reportedTokens), home: home)
    }
}
