import NIOCore
import NIOHTTP1
import NIOPosix
import TracegateExport
import TracegateProxy
import TracegateTrace

/// Turns every exchange into a `CapturedExchange` and queues it for the trace builder, off the
/// forwarding path: nothing is parsed while an exchange is forwarded. While the queue is full,
/// exchanges are not captured at all.
///
/// When an exchange ends and its event loop has no other exchange in flight, the trace is built right
/// there instead (`InPlaceTraceBuilder`), after the loop has handled the I/O it was woken for; if an
/// exchange has started by then, the capture goes to the builder thread after all.
final class TraceObserver: ExchangeObserver {
    private let settings: TraceCaptureSettings
    private let captures: CaptureQueue<CapturedExchange>
    private let budget: CaptureBudget
    private let inPlace: InPlaceTraceBuilder?
    /// The event loop this instance serves (`forEventLoop`); nil for the listener's own instance.
    private let eventLoop: EventLoop?
    private let loop = LoopState()
    /// Queues a capture for the builder thread.
    private let queueCapture: @Sendable (CapturedExchange) -> Void
    /// Queues a WebSocket turn's capture, unless captures are paused (then it goes untraced and is counted).
    private let queueTurn: @Sendable (CapturedExchange) -> Void
    /// What the builder thread is done with, back from it to be freed on this instance's event loop; nil
    /// for the listener's own instance (the builder frees those).
    let returns: LoopReturns?

    /// What an instance keeps for its event loop: each loop has an instance of its own, so never shared.
    private final class LoopState: @unchecked Sendable {
        var random = Xoshiro256StarStar()
        var schedule = InPlaceBuildSchedule<CapturedExchange>()
    }

    init(
        settings: TraceCaptureSettings, captures: CaptureQueue<CapturedExchange>, budget: CaptureBudget,
        inPlace: InPlaceTraceBuilder? = nil
    ) {
        self.settings = settings
        self.captures = captures
        self.budget = budget
        self.inPlace = inPlace
        self.eventLoop = nil
        self.returns = nil
        (queueCapture, queueTurn) = Self.queues(settings: settings, captures: captures, budget: budget, home: nil)
    }

    private init(_ root: TraceObserver, eventLoop: EventLoop) {
        (settings, captures, budget, inPlace) = (root.settings, root.captures, root.budget, root.inPlace)
        let returns = LoopReturns()
        (queueCapture, queueTurn) = Self.queues(settings: settings, captures: captures, budget: budget, home: returns)
        self.returns = returns
        self.eventLoop = eventLoop
        // A loop that starts no exchange for a while (no traffic) frees within a second. The task ends
        // itself once the observer is gone (cancelling it from `deinit` could find the loop shut down).
        eventLoop.scheduleRepeatedTask(initialDelay: Self.releaseInterval, delay: Self.releaseInterval) { [weak returns] task in
            guard let returns else { return task.cancel() }
            returns.releaseAll()
        }
    }

    /// How often a loop frees what came back to it, besides at each exchange and WebSocket turn.
    static let releaseInterval = TimeAmount.seconds(1)

    deinit { returns?.close() }

    /// The closures that queue a capture and a WebSocket turn's capture, offered with `home`.
    private static func queues(
        settings: TraceCaptureSettings, captures: CaptureQueue<CapturedExchange>, budget: CaptureBudget, home: LoopReturns?
    ) -> (capture: @Sendable (CapturedExchange) -> Void, turn: @Sendable (CapturedExchange) -> Void) {
        let queueCapture: @Sendable (CapturedExchange) -> Void = { captured in
            if !captures.offer(captured, home: home) { budget.release(captured.bodyStorage) }
        }
        let upstreams = settings.upstreams
        let queueTurn: @Sendable (CapturedExchange) -> Void = { captured in
            home?.releaseAll()  // on the loop: a WebSocket's turns come without new exchanges
            guard captures.isAccepting else {
                captures.refuse()
                budget.release(captured.bodyStorage)
                return
            }
            var captured = captured
            captured.upstream = Self.upstream(of: captured.routeIndex, in: upstreams)  // the tap does not keep the table
            queueCapture(captured)
        }
        return (queueCapture, queueTurn)
    }

    /// An instance with the loop's own random numbers and build schedule, sharing queues and budget.
    func forEventLoop(_ eventLoop: EventLoop) -> ExchangeObserver { TraceObserver(self, eventLoop: eventLoop) }

    func exchangeStarted(_ head: RequestHead, requestID: String) -> ExchangeTap? {
        returns?.releaseAll()
        loop.schedule.exchangeStarted()
        if let untraced = settings.untracedPath, RouteTable.path(Substring(head.uri).prefix { $0 != "?" }, startsWith: untraced) {
            return nil
        }
        guard captures.isAccepting else {
            captures.refuse()
            return nil
        }
        return TraceTap(head: head, settings: settings, budget: budget, random: &loop.random, deliverTurn: queueTurn)
    }

    func tunnelOpened() { loop.schedule.exchangeBecameTunnel() }

    func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {
        let loop = self.loop
        let traceTap = tap as? TraceTap
        if let tunnel = summary.tunnel {
            // A WebSocket's turns are its traces; the upgrade itself is none.
            traceTap?.tunnelClosed(tunnel, outcome: summary.outcome)
        }
        let captured = summary.tunnel == nil ? traceTap.map { capture(summary, tap: $0) } : nil
        // Where it could be built in place: this event loop, if the builder takes it.
        var builder: (loop: EventLoop, inPlace: InPlaceTraceBuilder)?
        if let captured, let inPlace, inPlace.accepts(captured), let eventLoop = eventLoop ?? MultiThreadedEventLoopGroup.currentEventLoop {
            builder = (eventLoop, inPlace)
        }
        let stillCounted = summary.forwarded && summary.tunnel == nil  // a tunnel stopped counting when it opened
        switch loop.schedule.exchangeFinished(forwarded: stillCounted, capture: captured, fitsInPlace: builder != nil) {
        case nil, .wait?: return
        case .handOff?: queue(captured!)
        case .waitAndScheduleRun?:
            let (eventLoop, inPlace) = builder!  // only a capture that fits waits
            eventLoop.execute {
                let (build, handOff) = loop.schedule.run()
                for captured in build { inPlace.build(captured, home: self.returns) }
                for captured in handOff { self.queue(captured) }
            }
        }
    }

    private func capture(_ summary: ExchangeSummary, tap: TraceTap) -> CapturedExchange {
        let outcome: CapturedExchange.Outcome
        switch summary.outcome {
        case .completed: outcome = .completed
        case .rejected(let why): outcome = .rejected(why)
        case .upstreamFailed(let why): outcome = .upstreamFailed(why)
        case .upstreamTimeout(let why): outcome = .upstreamTimeout(why)
        case .clientAborted: outcome = .clientAborted
        }
        return CapturedExchange(
            traceIDHigh: tap.traceIDHigh, traceIDLow: tap.traceIDLow, rootSpanID: tap.rootSpanID,
            method: summary.method.rawValue, target: summary.target, upstream: Self.upstream(of: summary.route.index, in: settings.upstreams),
            userHeadValues: tap.userHeadValues, sessionHeadValues: tap.sessionHeadValues, requestID: summary.requestID,
            requestIDWasGenerated: tap.requestIDWasGenerated, headerTags: tap.headerTags,
            request: tap.request, response: tap.response, status: summary.status,
            startEpochNanos: summary.startedAtEpochNanos, durationNanos: summary.duration.nanoseconds,
            timeToFirstByteNanos: summary.timeToFirstByte?.nanoseconds,
            timeToFirstEventNanos: tap.timeToFirstEventNanos, outcome: outcome, sampled: tap.sampled,
            parentSpanID: tap.parentSpanID, routeIndex: summary.route.index,
            upstreamSentNanos: summary.sentUpstreamAfter?.nanoseconds, chunkArrivals: tap.chunkArrivals,
            lastResponseBytesNanos: tap.lastResponseBytesNanos, clientRetryCount: tap.clientRetryCount)
    }

    /// The upstream URL of route `routeIndex` (`UpstreamRoute.index`), clamped to the table.
    private static func upstream(of routeIndex: Int, in upstreams: [String]) -> String {
        upstreams[min(routeIndex, upstreams.count - 1)]
    }

    /// The captured bodies keep their share of the budget until the trace is built (`TracingPipeline`).
    private func queue(_ captured: CapturedExchange) { queueCapture(captured) }
}
