import NIOCore
import NIOHTTP1

/// One request/response pair in flight on a client connection: what it is (immutable), what it has
/// done (for its summary and `Server-Timing`), and its lifecycle, `machine`, which decides. Confined
/// to its connection's event loop.
final class Exchange {
    let clientHead: RequestHead
    let upstreamRequest: UpstreamRequest
    let startedAt: NIODeadline
    let startedAtEpochNanos: Int64
    let tap: ExchangeTap?
    let route: UpstreamRoute
    /// Whether the client connection may stay open once this exchange ends.
    let keepClientAlive: Bool

    var machine: ExchangeStateMachine<UpstreamConnection>
    /// Request bytes (already framed for the upstream) received while its connection was being opened.
    var pendingBytes: [ByteBuffer] = []  // empty arrays do not allocate
    /// When a new upstream connection was first asked for, and when the request head was handed to one.
    var connectStartedAt: NIODeadline?
    var sentUpstreamAt: NIODeadline?
    /// The proxy answered `Expect: 100-continue` itself.
    var sentContinue = false
    var status: Int?
    var firstByteAt: NIODeadline?
    var responseBodyBytes = 0
    /// The response body was streamed (chunked or close-delimited upstream).
    var streamed = false
    /// The upstream's `101` head, kept from its arrival until it is written to the client.
    var switchingProtocolsHead: ByteBuffer?
    /// Set once the upstream switched protocols.
    var tunnel: TunnelFigures?
    /// Tunnel bytes the tap has yet to see: it reads them once what was read has been flushed on,
    /// so tracing is never between a message and its forwarding.
    private var untapped: [(bytes: ByteBuffer, fromClient: Bool)] = []

    func tapLater(_ bytes: ByteBuffer, fromClient: Bool) {
        if tap != nil { untapped.append((bytes, fromClient)) }
    }

    /// Hands the tap the tunnel bytes forwarded since it last looked, in the order they came.
    func tapTunnelBytes() {
        guard let tap, !untapped.isEmpty else { return }
        for (bytes, fromClient) in untapped { tap.tunnelBytes(bytes, fromClient: fromClient) }
        untapped.removeAll(keepingCapacity: true)
    }

    /// The frames of an open tunnel, each way (reported in `tunnel` when it closes).
    var clientFrames = WebSocketFrameCounter()
    var upstreamFrames = WebSocketFrameCounter()

    init(
        clientHead: RequestHead, upstreamRequest: UpstreamRequest, machine: ExchangeStateMachine<UpstreamConnection>,
        now: NIODeadline, keepClientAlive: Bool, tap: ExchangeTap?, route: UpstreamRoute = .defaultUpstream
    ) {
        self.route = route
        self.clientHead = clientHead
        self.upstreamRequest = upstreamRequest
        self.machine = machine
        self.keepClientAlive = keepClientAlive
        self.tap = tap
        self.startedAt = now
        self.startedAtEpochNanos = Exchange.wallClockNanos()
    }

    /// Whether a request that found its pooled connection closed may be sent again on a fresh one:
    /// an idempotent method (RFC 9110 §9.2.2), not chunked (its last chunk went to the closed connection).
    static func isResendable(_ method: HTTPMethod, framing: BodyFraming) -> Bool {
        guard framing != .chunked else { return false }
        switch method {
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
            requestBodyBytes: machine.requestBodyBytes,
            responseBodyBytes: responseBodyBytes,
            startedAtEpochNanos: startedAtEpochNanos,
            duration: now - startedAt,
            timeToFirstByte: firstByteAt.map { $0 - startedAt },
            sentUpstreamAfter: sentUpstreamAt.map { $0 - startedAt },
            outcome: outcome,
            streamed: streamed,
            route: route,
            tunnel: tunnel.map { figures in
                var figures = figures
                figures.framesFromClient = clientFrames.frames
                figures.framesFromUpstream = upstreamFrames.frames
                return figures
            }
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
