import NIOCore
import NIOHTTP1

/// How an exchange ended, as the client saw it.
public enum ExchangeOutcome: Sendable, Equatable {
    /// The upstream's response was delivered in full.
    case completed
    /// The proxy answered itself because the request was unacceptable (4xx/501).
    case rejected(String)
    /// The upstream could not be reached, or failed before or during its response (502).
    case upstreamFailed(String)
    /// A connect, first-byte or idle timeout fired (504, or a cut stream).
    case upstreamTimeout(String)
    /// The client went away before the response was complete.
    case clientAborted

    public var isError: Bool { self != .completed }
}

/// What happened in one exchange; handed to observers when it ends.
public struct ExchangeSummary: Sendable {
    public var requestID: String
    public var method: HTTPMethod
    /// The request target as the client sent it.
    public var target: String
    public var clientAddress: String?
    /// Status sent to the client; nil when the client got no response head.
    public var status: Int?
    public var requestBodyBytes: Int
    public var responseBodyBytes: Int
    /// Wall-clock start, nanoseconds since the Unix epoch.
    public var startedAtEpochNanos: Int64
    public var duration: TimeAmount
    /// From the request head to the upstream's response head.
    public var timeToFirstByte: TimeAmount?
    /// From the request head to the moment it was handed to an upstream connection; nil if it never was.
    public var sentUpstreamAfter: TimeAmount?
    public var outcome: ExchangeOutcome
    /// False when the proxy refused the request from its head alone (no `exchangeStarted` was called).
    public var forwarded: Bool = true
    /// The response body was streamed (chunked or close-delimited upstream), as SSE responses are.
    public var streamed: Bool = false
    /// The upstream the request went to.
    public var route: UpstreamRoute = .defaultUpstream
    /// What passed through, when the upstream switched protocols (a WebSocket tunnel).
    public var tunnel: TunnelFigures?
}

/// A WebSocket tunnel's traffic, reported when it closes.
public struct TunnelFigures: Sendable, Equatable {
    public var bytesFromClient = 0
    public var bytesFromUpstream = 0
    /// WebSocket frames each way, data and control.
    public var framesFromClient = 0
    public var framesFromUpstream = 0
    /// Closed by `websocket_idle_timeout`.
    public var closedIdle = false
    /// Closed because the upstream took nothing for `send_timeout`.
    public var closedStalled = false
    /// Closed by the proxy's shutdown once `shutdown_grace` was over.
    public var closedAtShutdown = false

    public init(bytesFromClient: Int = 0, bytesFromUpstream: Int = 0, closedIdle: Bool = false, closedAtShutdown: Bool = false) {
        self.bytesFromClient = bytesFromClient
        self.bytesFromUpstream = bytesFromUpstream
        self.closedIdle = closedIdle
        self.closedAtShutdown = closedAtShutdown
    }
}

/// Sees every exchange's body bytes as they pass; created per exchange and used on its event loop only.
public protocol ExchangeTap: AnyObject {
    /// Fields added to the response sent to the client (e.g. the trace id), read once per response head.
    var responseHeaders: [(name: String, value: String)] { get }
    /// Fields set on the request sent upstream (e.g. `traceparent`), replacing the client's fields of
    /// the same names; read once, when the request head is rewritten.
    var upstreamHeaders: [(name: String, value: String)] { get }
    func requestBody(_ bytes: ByteBuffer)
    func responseHead(_ head: ResponseHead)
    func responseBody(_ bytes: ByteBuffer)
    /// The upstream switched protocols (`101`, passed on as it is) in answer to `request` (its
    /// request id `requestID`): a tunnel to `route` opens.
    func tunnelOpened(_ head: ResponseHead, request: RequestHead, requestID: String, route: UpstreamRoute)
    /// Bytes passing through a tunnel after the upstream switched protocols, as they were sent.
    func tunnelBytes(_ bytes: ByteBuffer, fromClient: Bool)
}

/// Something that happened to a client connection rather than to an exchange: limits and timeouts
/// the proxy enforced, and failures to accept.
public enum ConnectionEvent: Sendable, Equatable {
    /// `accept` failed (`EMFILE`, `ENFILE`, `ENOMEM`…); accepting pauses briefly instead of spinning.
    case acceptFailed(errno: Int32)
    /// A connection arrived while `max_connections` were open: answered 503 and closed.
    case refusedAtCapacity
    /// A request head took longer than `client_header_timeout` (408), or a new connection sent nothing.
    case clientHeaderTimeout
    /// A request body paused for longer than `client_body_timeout` (408).
    case clientBodyTimeout
    /// The client took nothing of what was written to it for `send_timeout`: closed.
    case sendTimeout
}

/// Watches exchanges. Called on the connection's event loop for every request, so it must be cheap
/// and must never block: hand anything expensive to another thread.
public protocol ExchangeObserver: AnyObject, Sendable {
    /// The observer the connections of `eventLoop` call, asked once per loop when the listener is set
    /// up and then called on that loop only: an observer can keep per-loop state (counters, scratch
    /// space) in it, used without locks.
    func forEventLoop(_ eventLoop: EventLoop) -> ExchangeObserver
    /// A request head arrived and will be forwarded; return a tap to see its bytes, or nil.
    func exchangeStarted(_ head: RequestHead, requestID: String) -> ExchangeTap?
    /// The upstream's response head was passed on; `streamed` when its body is chunked or close-delimited.
    func responseStarted(streamed: Bool)
    /// The upstream switched protocols: a WebSocket tunnel is open until its exchange finishes.
    func tunnelOpened()
    /// The exchange ended (completed, rejected, failed or aborted).
    func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?)
    /// A connection limit or timeout was enforced, or accepting failed. Rare; may take a lock.
    func connectionEvent(_ event: ConnectionEvent)
}

extension ExchangeTap {
    public var upstreamHeaders: [(name: String, value: String)] { [] }
    public func tunnelOpened(_ head: ResponseHead, request: RequestHead, requestID: String, route: UpstreamRoute) {}
    public func tunnelBytes(_ bytes: ByteBuffer, fromClient: Bool) {}
}

extension ExchangeObserver {
    public func forEventLoop(_ eventLoop: EventLoop) -> ExchangeObserver { self }
    public func exchangeStarted(_ head: RequestHead, requestID: String) -> ExchangeTap? { nil }
    public func responseStarted(streamed: Bool) {}
    public func tunnelOpened() {}
    public func connectionEvent(_ event: ConnectionEvent) {}
}
