/// When an event loop builds a trace itself (`InPlaceTraceBuilder`) and when it hands the capture to
/// the builder thread. One per event loop; pure, so its rules are tested without one.
///
/// - A capture that ends while no other exchange is in flight on the loop waits for the loop to have
///   handled the I/O it was woken for (`run()` is then due: the caller schedules it once).
/// - `run()` builds what waits if the loop is still idle; if an exchange has started meanwhile, what
///   waits goes to the builder thread instead, so building never delays forwarding that is ready.
/// - A capture that ends while exchanges are in flight, or that is too large to build in place, goes
///   to the builder thread at once.
struct InPlaceBuildSchedule<Capture> {
    /// Exchanges started on the loop and not yet finished.
    private(set) var inFlight = 0
    private var waiting: [Capture] = []

    enum Decision: Equatable {
        /// Queue the capture for the builder thread.
        case handOff
        /// It waits; schedule `run()` after the loop's current I/O (only the first waiting asks).
        case waitAndScheduleRun
        /// It waits; a `run()` is already scheduled.
        case wait
    }

    mutating func exchangeStarted() { inFlight += 1 }

    /// An exchange became a WebSocket tunnel: it may stay open for hours with the loop mostly idle,
    /// so it no longer counts as in flight (its end is then reported with `forwarded` false).
    mutating func exchangeBecameTunnel() { inFlight = max(0, inFlight - 1) }

    /// An exchange ended (`forwarded`: it had started); `capture` is what it left to trace, if anything.
    mutating func exchangeFinished(forwarded: Bool, capture: Capture?, fitsInPlace: Bool) -> Decision? {
        if forwarded { inFlight = max(0, inFlight - 1) }
        guard let capture else { return nil }
        guard inFlight == 0, fitsInPlace else { return .handOff }
        waiting.append(capture)
        return waiting.count == 1 ? .waitAndScheduleRun : .wait
    }

    /// What waits: built here while the loop is still idle, else handed off.
    mutating func run() -> (build: [Capture], handOff: [Capture]) {
        defer { waiting.removeAll(keepingCapacity: true) }
        return inFlight == 0 ? (waiting, []) : ([], waiting)
    }
}
