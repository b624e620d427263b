import NIOCore
import NIOHTTP1

/// One request/response pair in flight on a client connection. Confined to that connection's event loop.
final class Exchange {
    let clientHead: RequestHead
    let upstreamRequest: UpstreamRequest
    let startedAt: NIODeadline
    let startedAtEpochNanos: Int64
    let tap: ExchangeTap?
    /// Which upstream it goes to.
    let route: UpstreamRoute
    /// Whether the client connection may stay open once this exchange ends.
    var keepClientAlive: Bool

    var upstream: UpstreamConnection?
    /// Request bytes (already framed for the upstream) received while its connection was being opened.
    var pendingBytes: [ByteBuffer] = []  // empty arrays do not allocate
    var isConnecting = false
    /// When a new upstream connection was asked for, and when the request head was handed to one.
    var connectStartedAt: NIODeadline?
    var sentUpstreamAt: NIODeadline?
    /// Set after a retry on a fresh connection, so it happens at most once.
    var hasRetried = false

    var requestComplete = false
    var requestEndedAt: NIODeadline?
    /// The body is being read whole before an upstream connection is taken (`requestBufferingBytes`).
    var isBufferingRequest = false
    /// The proxy answered `Expect: 100-continue` itself.
    var sentContinue = false
    /// Last time request body bytes were read (for the client body timeout).
    var lastBodyReadAt: NIODeadline
    var requestBodyBytes = 0
    /// Set when the proxy answered itself before the request ended: further body parts are dropped.
    var discardingRequest = false

    var responseStarted = false
    var status: Int?
    var firstByteAt: NIODeadline?
    var responseBodyBytes = 0
    var upstreamFraming: BodyFraming = .none
    /// The response body is re-framed in chunked coding for the client.
    var chunkedToClient = false
    /// False when the upstream's response said it will close the connection.
    var upstreamKeepsAlive = true
    var closeClientAfter = false
    /// Last time bytes moved in either direction (for the idle timeout).
    var lastActivity: NIODeadline

    init(
        clientHead: RequestHead, upstreamRequest: UpstreamRequest, now: NIODeadline, keepClientAlive: Bool, tap: ExchangeTap?,
        route: UpstreamRoute = .defaultUpstream
    ) {
        self.route = route
        self.clientHead = clientHead
        self.upstreamRequest = upstreamRequest
        self.keepClientAlive = keepClientAlive
        self.tap = tap
        self.startedAt = now
        self.lastActivity = now
        self.lastBodyReadAt = now
        self.startedAtEpochNanos = Exchange.wallClockNanos()
    }

    /// When this exchange times out if nothing happens: first-byte after the request ended, idle otherwise.
    /// Nil while connecting (the connect timeout covers that).
    func deadline(firstByteTimeout: TimeAmount, idleTimeout: TimeAmount) -> NIODeadline? {
        if isConnecting { return nil }
        if requestComplete && !responseStarted, let end = requestEndedAt { return end + firstByteTimeout }
        return lastActivity + idleTimeout
    }

    /// A request that can safely be sent again on a fresh connection: idempotent and without a body.
    var isRetryable: Bool {
        guard !hasRetried, requestComplete, requestBodyBytes == 0, !responseStarted else { return false }
        switch clientHead.method {
        case .GET, .HEAD, .OPTIONS, .TRACE, .PUT, .DELETE: return true
        default: return false
        }
    }

    /// What the proxy spent before the request went upstream, opening a connection, and waiting for the
    /// upstream's response head (`Server-Timing`), as of `responseHeadAt`.
    func timing(responseHeadAt: NIODeadline) -> ServerTiming? {
        guard let sent = sentUpstreamAt else { return nil }
        let connect = connectStartedAt.map { sent - $0 } ?? .zero
        return ServerTiming(proxy: sent - startedAt - connect, connect: connectStartedAt == nil ? nil : connect, upstream: responseHeadAt - sent)
    }

    func summary(clientAddress: String?, outcome: ExchangeOutcome, now: NIODeadline) -> ExchangeSummary {
        ExchangeSummary(
            requestID: upstreamRequest.requestID,
            method: clientHead.method,
            target: clientHead.uri,
            clientAddress: clientAddress,
            status: status,
            requestBodyBytes: requestBodyBytes,
            responseBodyBytes: responseBodyBytes,
            startedAtEpochNanos: startedAtEpochNanos,
            duration: now - startedAt,
            timeToFirstByte: firstByteAt.map { $0 - startedAt },
            sentUpstreamAfter: sentUpstreamAt.map { $0 - startedAt },
            outcome: outcome,
            streamed: upstreamFraming == .chunked || upstreamFraming == .untilClose,
            route: route
        )
    }

    static func wallClockNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
