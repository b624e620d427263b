import NIOCore

/// The lifecycle of one client connection, as decisions: waiting for a request, reading its head,
/// serving an exchange, closing. The exchange itself is `ExchangeStateMachine`'s.
///
/// A value type without I/O: each event returns what `ClientConnectionHandler` must do, so the
/// keep-alive, header and send timeouts and the graceful close are tested without a channel.
struct ClientConnectionStateMachine {
    enum State: Equatable {
        /// No exchange and no request bytes, since the accept (`hadRequest` false: the first head
        /// must arrive within the header timeout) or since the last exchange ended (keep-alive timeout).
        case idle(since: NIODeadline, hadRequest: Bool)
        /// The first bytes of a request head arrived at `since`; the rest must follow within the
        /// header timeout.
        case readingHead(since: NIODeadline)
        /// An exchange is in flight.
        case inExchange
        /// No new exchange starts; the connection closes once the exchange in flight ends.
        case closingAfterExchange
        /// No new exchange starts and none is in flight, since `since`: the connection closes once
        /// what was written is out, and at the latest after the keep-alive timeout (a client that
        /// reads nothing could otherwise hold it for ever).
        case closing(since: NIODeadline)
        case closed
    }

    /// What a fired timer asks for.
    enum TimerDecision: Equatable {
        /// Nothing is due yet; look again at this deadline.
        case wait(until: NIODeadline)
        /// Nothing to watch any more.
        case nothing
        /// The client took nothing of what was written to it for the send timeout: give up on it.
        case sendTimedOut
        /// A request head did not arrive whole in time: answer 408 and close.
        case headerTimedOut
        /// An idle connection reached its timeout: close it (`firstRequest`: it never sent one).
        case closeIdle(firstRequest: Bool)
        /// The exchange in flight decides (its own timeouts).
        case exchange
    }

    struct Timeouts {
        var header: TimeAmount
        var keepalive: TimeAmount
        var send: TimeAmount
    }

    private(set) var state: State
    /// Since when the client has taken nothing of what is queued for it, and how much was queued then.
    private(set) var sendStall: (since: NIODeadline, bufferedBytes: Int)?

    /// A connection accepted at `now`; the timer is due at the returned deadline.
    init(acceptedAt now: NIODeadline) {
        state = .idle(since: now, hadRequest: false)
    }

    var isClosing: Bool {
        switch state {
        case .closingAfterExchange, .closing, .closed: return true
        case .idle, .readingHead, .inExchange: return false
        }
    }

    /// Whether a request head may be parsed now: no exchange in flight and not closing.
    var takesRequests: Bool {
        switch state {
        case .idle, .readingHead: return true
        case .inExchange, .closingAfterExchange, .closing, .closed: return false
        }
    }

    /// Part of a request head is waiting; returns the header deadline to arm, if it starts one now.
    mutating func headBytesWaiting(now: NIODeadline, timeouts: Timeouts) -> NIODeadline? {
        guard case .idle = state else { return nil }
        state = .readingHead(since: now)
        return now + timeouts.header
    }

    /// A request head was parsed: an exchange starts (it may still be refused at once).
    mutating func requestHeadParsed() {
        guard takesRequests else { return }
        state = .inExchange
    }

    /// The connection must close once what was written is out: an answer that says `connection:
    /// close`, a refused or unreadable request, a cut response.
    mutating func mustClose(now: NIODeadline) {
        switch state {
        case .idle, .readingHead: state = .closing(since: now)
        case .inExchange: state = .closingAfterExchange
        case .closingAfterExchange, .closing, .closed: break
        }
    }

    /// A graceful shutdown (NIO's quiesce event) or the client's half-close: finish what is in flight,
    /// take nothing new. True when the connection should close now (nothing in flight).
    mutating func stopTakingRequests(now: NIODeadline) -> Bool {
        switch state {
        case .idle, .readingHead:
            state = .closing(since: now)
            return true
        case .inExchange:
            state = .closingAfterExchange
            return false
        case .closing:
            return true
        case .closingAfterExchange, .closed:
            return false
        }
    }

    /// The exchange in flight ended. True when the connection goes on (keep-alive: read the next
    /// request, from `now`); false when it closes after what was written.
    mutating func exchangeEnded(now: NIODeadline) -> Bool {
        switch state {
        case .inExchange:
            state = .idle(since: now, hadRequest: true)
            return true
        case .closingAfterExchange:
            state = .closing(since: now)
            return false
        case .idle, .readingHead, .closing, .closed:
            return false
        }
    }

    /// The client connection closed.
    mutating func closed() { state = .closed }

    /// The client stopped or resumed taking bytes. Returns the send deadline to arm when a stall starts.
    mutating func writabilityChanged(writable: Bool, now: NIODeadline, bufferedBytes: Int, timeouts: Timeouts) -> NIODeadline? {
        if writable {
            sendStall = nil
            return nil
        }
        guard sendStall == nil else { return nil }
        sendStall = (now, bufferedBytes)
        return now + timeouts.send
    }

    /// What is due at `now`. `bufferedBytes`: what the client has not taken yet. `sendDeadline`: a
    /// send-stall deadline to arm besides the decision (the client took something, or not long enough).
    mutating func timerFired(
        now: NIODeadline, bufferedBytes: Int, timeouts: Timeouts
    ) -> (decision: TimerDecision, sendDeadline: NIODeadline?) {
        var sendDeadline: NIODeadline?
        if let stall = sendStall {
            if bufferedBytes < stall.bufferedBytes {
                // The client took something since the last look: a slow reader, not a stalled one.
                sendStall = (now, bufferedBytes)
                sendDeadline = now + timeouts.send
            } else if now >= stall.since + timeouts.send {
                return (.sendTimedOut, nil)
            } else {
                sendDeadline = stall.since + timeouts.send
            }
        }
        switch state {
        case .inExchange, .closingAfterExchange:
            return (.exchange, sendDeadline)
        case .readingHead(let since):
            let deadline = since + timeouts.header
            return (now >= deadline ? .headerTimedOut : .wait(until: deadline), sendDeadline)
        case .idle(let since, let hadRequest):
            let deadline = since + (hadRequest ? timeouts.keepalive : timeouts.header)
            return (now >= deadline ? .closeIdle(firstRequest: !hadRequest) : .wait(until: deadline), sendDeadline)
        case .closing(let since):
            let deadline = since + timeouts.keepalive
            return (now >= deadline ? .closeIdle(firstRequest: false) : .wait(until: deadline), sendDeadline)
        case .closed:
            return (.nothing, sendDeadline)
        }
    }
}
