import NIOCore

/// The lifecycle of one proxied exchange, from its request head to its end, as decisions.
///
/// A value type without I/O, after async-http-client's `HTTP1ConnectionStateMachine`: each event the
/// client handler sees — request body and end, an upstream connection obtained, refused or closed,
/// the response head and end, a timer, a failure, the client gone — is a `mutating func` that returns
/// what the handler must do. States are an enum with their data, so an exchange cannot be waiting for
/// a connection and streaming a response at once. An event that no longer concerns the exchange (a
/// connection that arrives after it failed, the close of an upstream it has let go) is answered with
/// what cleans up after it, never a crash.
///
/// What belongs to the client connection rather than the exchange (parsing, reads held for
/// backpressure, keep-alive, whether the connection is closing) stays in `ClientConnectionHandler`.
/// `Upstream` is the upstream connection's type, generic so that tests drive the machine without
/// channels.
struct ExchangeStateMachine<Upstream: AnyObject> {
    /// How far the client's request has come.
    enum Request: Equatable {
        /// Body bytes are still arriving.
        case receiving
        /// The whole request arrived, at this time.
        case complete(at: NIODeadline)
    }

    /// The response, once its head went to the client.
    struct Response: Equatable {
        /// How the upstream delimits the body.
        var framing: BodyFraming
        /// The body is re-framed in chunked coding for the client.
        var chunkedToClient: Bool
        /// False when the upstream said it closes the connection after this response.
        var upstreamKeepsAlive: Bool
        /// The client connection closes after this response.
        var closeClientAfter: Bool
    }

    enum State {
        /// The body is read whole (`requestBufferingBytes`) before an upstream connection is taken.
        case bufferingRequest
        /// Waiting for an upstream connection, pooled or new; request bytes queue meanwhile.
        case connecting(Request)
        /// The request went to `upstream`; no response yet.
        case awaitingResponse(Upstream, Request)
        /// The response head went to the client; its body comes from `upstream`.
        case responding(Upstream, Request, Response)
        /// The upstream switched protocols (`101` to a WebSocket upgrade): bytes flow both ways
        /// unchanged until both sides have finished sending, or either closes.
        case tunnelling(Upstream, Tunnel)
        /// Over: completed, answered by the proxy, cut, or left by the client.
        case finished
    }

    /// Which sides of a tunnel still send.
    struct Tunnel: Equatable {
        var clientSends = true
        var upstreamSends = true
    }

    /// What becomes of the upstream connection when the exchange lets go of it.
    enum Release {
        /// Back to the pool: both messages were exactly delimited and nothing else arrived.
        case keep(Upstream)
        case close(Upstream)
        /// The exchange holds no connection (none yet, or the upstream closed it).
        case none
    }

    /// How an exchange ends.
    enum Ending {
        /// The response is complete: write its end.
        case completed(upstream: Release, requestComplete: Bool, response: Response)
        /// No response started: answer `error` to the client.
        case answer(ProxyError, upstream: Release, requestComplete: Bool)
        /// A response (or the client's patience) cannot be completed: cut the client connection.
        case abort(ExchangeOutcome, upstream: Release)
        /// The client connection closed first.
        case clientGone(upstream: Release)
        /// A tunnel is over (both sides finished, one closed, or it idled out): close the client
        /// connection once what was written is out.
        case tunnelClosed(upstream: Release, idle: Bool)
    }

    enum Action {
        case none
        /// Take a pooled connection or open one, then report `upstreamConnected` or `connectFailed`.
        case acquireConnection
        /// Open a fresh connection: a pooled one turned out closed before answering.
        case openFreshConnection
        /// Write the request head and the bytes queued so far to `upstream`, and flush.
        case sendRequest(Upstream)
        /// Frame and forward this body part (to the upstream, or queued while connecting).
        case forwardBody
        /// Flush what was forwarded to the upstream.
        case flushUpstream
        /// A connection arrived for an exchange that no longer wants it: return it to the pool.
        case releaseLateConnection(Upstream)
        /// Write the upstream's `101` to the client unchanged, then pass bytes both ways.
        case openTunnel(Upstream)
        /// One side finished sending: finish sending to the other (a half-close passes through).
        case closeUpstreamOutput
        case closeClientOutput
        case end(Ending)
    }

    /// What a timer that fired asks for.
    enum TimerDecision: Equatable {
        /// Nothing is due before this deadline.
        case wait(until: NIODeadline)
        /// The client paused its body for longer than `clientBody` (answer 408).
        case clientBodyTimeout
        /// Answer this error: the upstream took too long.
        case fail(ProxyError)
        /// A response stalled mid-way: cut it.
        case abortIdle
        /// No byte went either way in a tunnel for `tunnelIdle`: close it.
        case closeIdleTunnel
        /// A tunnel's upstream took nothing of what was written to it for `send`: close it.
        case closeStalledTunnel
    }

    /// The timeouts an exchange is held to.
    struct Timeouts {
        var connect: TimeAmount
        var firstByte: TimeAmount
        var idle: TimeAmount
        var clientBody: TimeAmount
        /// For a tunnel: no byte either way for this long closes it (`websocket_idle_timeout`).
        var tunnelIdle: TimeAmount = .hours(1)
        /// For a tunnel: an upstream that takes nothing written to it for this long closes it (`send_timeout`).
        var send: TimeAmount = .seconds(60)
    }

    private(set) var state: State
    /// Set after a retry on a fresh connection, so it happens at most once.
    private(set) var hasRetried = false
    private(set) var requestBodyBytes = 0
    /// Last time bytes moved in either direction (for the idle timeout).
    private(set) var lastActivity: NIODeadline
    /// Last time request body bytes were read (for the client body timeout).
    private(set) var lastBodyReadAt: NIODeadline
    /// A tunnel's upstream not taking what is written to it (its channel not writable): since when,
    /// and how many bytes waited for it then.
    private(set) var upstreamStall: (since: NIODeadline, bufferedBytes: Int)?
    /// The request may be sent again whole after a pooled connection failed: see `init`.
    private let resendable: Bool
    /// The request asks for a WebSocket (`Upgrade: websocket`): a `101` opens a tunnel.
    let asksWebSocket: Bool
    private let maxBodyBytes: Int?

    /// A new exchange. `resendable`: the request may be sent again on a fresh connection if a pooled
    /// one turns out closed — an idempotent method (RFC 9110 §9.2.2) whose framing sends nothing the
    /// proxy could not send again (a chunked body's last chunk went to the closed connection).
    init(hasBody: Bool, buffersBody: Bool, resendable: Bool, maxBodyBytes: Int?, now: NIODeadline, asksWebSocket: Bool = false) {
        self.resendable = resendable
        self.asksWebSocket = asksWebSocket
        self.maxBodyBytes = maxBodyBytes
        lastActivity = now
        lastBodyReadAt = now
        if hasBody && buffersBody {
            state = .bufferingRequest
        } else {
            state = .connecting(hasBody ? .receiving : .complete(at: now))
        }
    }

    /// What to do first: take a connection, unless the body is buffered first (or the exchange is
    /// already over: the client left while the proxy invited its body).
    var startAction: Action {
        if case .connecting = state { return .acquireConnection }
        return .none
    }

    // MARK: Request

    /// A part of the request body arrived.
    mutating func requestBodyReceived(bytes: Int, now: NIODeadline) -> Action {
        guard request == .receiving else { return .none }  // finished: what is left of the body is dropped
        requestBodyBytes += bytes
        lastActivity = now
        lastBodyReadAt = now
        if let limit = maxBodyBytes, requestBodyBytes > limit { return fail(.bodyTooLarge(limit: limit)) }
        return .forwardBody
    }

    /// The whole request arrived (for a bodiless request, at its head).
    mutating func requestEnded(now: NIODeadline) -> Action {
        lastActivity = now
        switch state {
        case .bufferingRequest:
            state = .connecting(.complete(at: now))
            return .acquireConnection
        case .connecting(.receiving):
            state = .connecting(.complete(at: now))
            return .none
        case .awaitingResponse(let upstream, .receiving):
            state = .awaitingResponse(upstream, .complete(at: now))
            return .flushUpstream
        case .responding(let upstream, .receiving, let response):
            state = .responding(upstream, .complete(at: now), response)
            return .flushUpstream
        case .connecting(.complete), .awaitingResponse(_, .complete), .responding(_, .complete, _), .tunnelling, .finished:
            return .none
        }
    }

    /// Reads of the client were held (for the upstream) and resume: the body timeout measures the
    /// client's pauses, not the proxy's.
    mutating func clientReadsResumed(now: NIODeadline) { lastBodyReadAt = now }

    /// Bytes moved, or the client took what was written to it.
    mutating func noteActivity(now: NIODeadline) { lastActivity = now }

    // MARK: Upstream connection

    /// A connection for the exchange: pooled, or newly opened.
    mutating func upstreamConnected(_ upstream: Upstream) -> Action {
        guard case .connecting(let request) = state else { return .releaseLateConnection(upstream) }
        state = .awaitingResponse(upstream, request)
        return .sendRequest(upstream)
    }

    /// No connection could be opened (refused, unresolvable, timed out).
    mutating func connectFailed(_ error: ProxyError) -> Action {
        guard case .connecting = state else { return .none }  // already over
        return fail(error)
    }

    /// The upstream connection closed. `hadServed`: it had served an earlier exchange (it came from the
    /// pool); `error`: what closed it, nil for a clean close.
    mutating func upstreamClosed(_ upstream: Upstream, hadServed: Bool, error: String?) -> Action {
        switch state {
        case .awaitingResponse(let current, let request) where current === upstream:
            if hadServed && isRetryable(request) {
                // A pooled connection the upstream had already closed: once more on a fresh one.
                hasRetried = true
                state = .connecting(request)
                return .openFreshConnection
            }
            state = .finished
            let failure: ProxyError = error.map { .upstreamUnreachable($0) } ?? .upstreamClosedEarly
            return .end(.answer(failure, upstream: .none, requestComplete: request != .receiving))
        case .responding(let current, let request, let response) where current === upstream:
            state = .finished
            if response.framing == .untilClose && error == nil {  // a close-delimited body ends here
                return .end(.completed(upstream: .none, requestComplete: request != .receiving, response: response))
            }
            return .end(.abort(.upstreamFailed("upstream closed the connection mid-response"), upstream: .none))
        case .tunnelling(let current, _) where current === upstream:
            state = .finished
            return .end(.tunnelClosed(upstream: .none, idle: false))
        default:
            return .none  // a connection the exchange no longer uses
        }
    }

    // MARK: Response

    /// The response head arrived and is forwarded to the client.
    mutating func responseHeadReceived(_ response: Response, now: NIODeadline) -> Action {
        lastActivity = now
        guard case .awaitingResponse(let upstream, let request) = state else { return .none }
        state = .responding(upstream, request, response)
        return .none
    }

    /// The upstream answered a WebSocket upgrade with `101 Switching Protocols`. Only a request that
    /// asked for it, whole, can be switched; anything else is an invalid response.
    mutating func switchedProtocols(now: NIODeadline) -> Action {
        lastActivity = now
        guard case .awaitingResponse(let upstream, .complete) = state, asksWebSocket else {
            return fail(.invalidUpstreamResponse("101 Switching Protocols without an upgrade request"))
        }
        state = .tunnelling(upstream, Tunnel())
        return .openTunnel(upstream)
    }

    /// The client finished sending (its half of the connection closed). In a tunnel the upstream is
    /// told the same way; once both sides have finished, the tunnel is over.
    mutating func clientFinishedSending() -> Action {
        guard case .tunnelling(let upstream, _) = state else { return .none }
        return finishedSending(\.clientSends, on: upstream, passOn: .closeUpstreamOutput)
    }

    /// The upstream finished sending in a tunnel (its half of the connection closed).
    mutating func upstreamFinishedSending(_ upstream: Upstream) -> Action {
        guard case .tunnelling(let current, _) = state, current === upstream else { return .none }
        return finishedSending(\.upstreamSends, on: upstream, passOn: .closeClientOutput)
    }

    /// One side of the tunnel on `upstream` finished sending: tell the other side (`passOn`), or end
    /// the tunnel once both have finished. Told once per side.
    private mutating func finishedSending(
        _ side: WritableKeyPath<Tunnel, Bool>, on upstream: Upstream, passOn: Action
    ) -> Action {
        guard case .tunnelling(_, var tunnel) = state, tunnel[keyPath: side] else { return .none }
        tunnel[keyPath: side] = false
        guard tunnel.clientSends || tunnel.upstreamSends else {
            state = .finished
            return .end(.tunnelClosed(upstream: .close(upstream), idle: false))
        }
        state = .tunnelling(upstream, tunnel)
        return passOn
    }

    /// A tunnel's upstream stopped or resumed taking what is written to it (also asked when the
    /// tunnel opens: a body the upstream never read may fill its buffer before). Returns the deadline
    /// to arm when a stall starts (the client's reads are held meanwhile, so no other timer would end
    /// it before `tunnelIdle`, and not even that while the upstream still sends).
    mutating func upstreamWritabilityChanged(writable: Bool, now: NIODeadline, bufferedBytes: Int, timeouts: Timeouts) -> NIODeadline? {
        guard case .tunnelling = state, !writable else {
            upstreamStall = nil
            return nil
        }
        guard upstreamStall == nil else { return nil }
        upstreamStall = (now, bufferedBytes)
        return now + timeouts.send
    }

    /// What waits for a stalled upstream now: if it took some since the stall began, it is a slow
    /// reader, not a stalled one, and the stall starts over.
    mutating func upstreamStillStalled(bufferedBytes: Int, now: NIODeadline) {
        guard let stall = upstreamStall, bufferedBytes < stall.bufferedBytes else { return }
        upstreamStall = (now, bufferedBytes)
    }

    /// Closes a tunnel that timed out: `idle` for no byte either way for `tunnelIdle`, otherwise
    /// an upstream that took nothing for `send`.
    mutating func closeTunnel(idle: Bool) -> Action {
        guard case .tunnelling(let upstream, _) = state else { return .none }
        state = .finished
        return .end(.tunnelClosed(upstream: .close(upstream), idle: idle))
    }

    /// The response ended. `nothingFollowed`: no bytes arrived after it on the connection.
    mutating func responseEnded(nothingFollowed: Bool) -> Action {
        guard case .responding(let upstream, let request, let response) = state else { return .none }
        state = .finished
        // Reused only when both messages were exactly delimited and nothing else arrived: anything
        // else could leave a response in the connection that the next exchange would take for its own.
        let reusable =
            request != .receiving && response.upstreamKeepsAlive && response.framing != .untilClose && nothingFollowed
        return .end(
            .completed(upstream: reusable ? .keep(upstream) : .close(upstream), requestComplete: request != .receiving, response: response))
    }

    // MARK: Failures

    /// The proxy gives up on the exchange with `error`: answered if no response started, else cut.
    mutating func fail(_ error: ProxyError) -> Action {
        switch state {
        case .bufferingRequest:
            state = .finished
            return .end(.answer(error, upstream: .none, requestComplete: false))
        case .connecting(let request):
            state = .finished
            return .end(.answer(error, upstream: .none, requestComplete: request != .receiving))
        case .awaitingResponse(let upstream, let request):
            state = .finished
            return .end(.answer(error, upstream: .close(upstream), requestComplete: request != .receiving))
        case .responding(let upstream, _, _), .tunnelling(let upstream, _):
            state = .finished
            return .end(.abort(error.outcome, upstream: .close(upstream)))
        case .finished:
            return .none
        }
    }

    /// The exchange is cut whatever its state, with `outcome` (the client stopped taking the response).
    mutating func abort(_ outcome: ExchangeOutcome) -> Action {
        letGo().map { .end(.abort(outcome, upstream: $0)) } ?? .none
    }

    /// The client connection closed.
    mutating func clientClosed() -> Action {
        letGo().map { .end(.clientGone(upstream: $0)) } ?? .none
    }

    /// Ends the exchange whatever its state; what becomes of its connection (closed), or nil if it
    /// was over already.
    private mutating func letGo() -> Release? {
        guard !isFinished else { return nil }
        let release = upstream.map(Release.close) ?? .none
        state = .finished
        return release
    }

    // MARK: Timers

    /// What is due at `now`. `clientReadsHeld`: reads of the client are held for the upstream, so a
    /// pause in the body is not the client's.
    func timerFired(now: NIODeadline, clientReadsHeld: Bool, timeouts: Timeouts) -> TimerDecision {
        let request: Request
        switch state {
        case .finished:
            return .wait(until: .distantFuture)
        case .connecting:
            if self.request == .receiving && !clientReadsHeld { return bodyDeadline(now: now, timeouts: timeouts) }
            return .wait(until: now + timeouts.connect)  // the connect timeout covers it
        case .bufferingRequest:
            if !clientReadsHeld { return bodyDeadline(now: now, timeouts: timeouts) }
            request = .receiving
        case .awaitingResponse(_, let current):
            if current == .receiving && !clientReadsHeld { return bodyDeadline(now: now, timeouts: timeouts) }
            request = current
        case .responding:
            let deadline = lastActivity + timeouts.idle
            return now >= deadline ? .abortIdle : .wait(until: deadline)
        case .tunnelling:
            var deadline = lastActivity + timeouts.tunnelIdle
            if let stall = upstreamStall {
                if now >= stall.since + timeouts.send { return .closeStalledTunnel }
                deadline = min(deadline, stall.since + timeouts.send)
            }
            return now >= deadline ? .closeIdleTunnel : .wait(until: deadline)
        }
        switch request {
        case .complete(let endedAt):
            let deadline = endedAt + timeouts.firstByte
            return now >= deadline ? .fail(.firstByteTimeout) : .wait(until: deadline)
        case .receiving:
            let deadline = lastActivity + timeouts.idle
            return now >= deadline ? .fail(.idleTimeout) : .wait(until: deadline)  // the upstream stopped taking the body
        }
    }

    private func bodyDeadline(now: NIODeadline, timeouts: Timeouts) -> TimerDecision {
        let deadline = lastBodyReadAt + timeouts.clientBody
        return now >= deadline ? .clientBodyTimeout : .wait(until: deadline)
    }

    // MARK: Reading the state

    var isFinished: Bool {
        if case .finished = state { return true }
        return false
    }

    var isConnecting: Bool {
        if case .connecting = state { return true }
        return false
    }

    /// The connection the exchange uses now, if any.
    var upstream: Upstream? {
        switch state {
        case .awaitingResponse(let upstream, _), .responding(let upstream, _, _), .tunnelling(let upstream, _): return upstream
        case .bufferingRequest, .connecting, .finished: return nil
        }
    }

    /// The request's progress; nil once the exchange is over.
    var request: Request? {
        switch state {
        case .bufferingRequest: return .receiving
        case .connecting(let request), .awaitingResponse(_, let request), .responding(_, let request, _): return request
        case .tunnelling: return .complete(at: lastActivity)
        case .finished: return nil
        }
    }

    var requestComplete: Bool {
        if case .complete = request { return true }
        return false
    }

    var isTunnelling: Bool {
        if case .tunnelling = state { return true }
        return false
    }

    /// The response, once its head went to the client (and until the exchange is over).
    var response: Response? {
        if case .responding(_, _, let response) = state { return response }
        return nil
    }

    /// Whether the request may be sent again on a fresh connection: idempotent, without a body, whole,
    /// and not retried yet.
    private func isRetryable(_ request: Request) -> Bool {
        !hasRetried && resendable && requestBodyBytes == 0 && request != .receiving
    }
}
