import NIOCore
import NIOHTTP1

/// What the parser learnt about a head's framing and connection fields in its single pass.
struct HeadFacts {
    var hostCount = 0
    /// The declared body length (nil when absent).
    var contentLength: Int?
    var contentLengthCount = 0
    var contentLengthInvalid = false
    /// Values in all `Content-Length` fields (`5, 5` is two).
    var contentLengthValues = 0
    var contentLengthConflict = false
    var hasTransferEncoding = false
    /// The final transfer coding is `chunked`.
    var transferEncodingChunked = false
    /// `chunked` is the one and only transfer coding.
    var transferEncodingOnlyChunked = false
    var hasUpgrade = false
    /// Every protocol named in `Upgrade` is `h2c`, which a proxy may ignore (RFC 9113 §3.1).
    var upgradeOnlyH2C = true
    /// `websocket` is the one protocol named in `Upgrade` (RFC 6455 §4.1).
    var upgradeOnlyWebSocket = false
    /// `Expect: 100-continue`, and whether any other expectation was named.
    var expectsContinue = false
    var expectsOther = false
    var connectionClose = false
    var connectionKeepAlive = false
    var connectionUpgrade = false
    /// Other field names listed in `Connection` (ranges into the head's bytes); those fields are dropped too.
    /// `Content-Length`, `Transfer-Encoding` and `Host` are never among them: the proxy decides and writes a
    /// message's framing itself, so a `Connection` option cannot remove it (RFC 9110 §7.6.1 lets a proxy
    /// keep fields whose removal would change how the message is delimited or routed).
    var connectionNamed: [Range<Int>] = []
    /// Index of the first non-empty request id field.
    var requestIDField: Int?

    /// Whether the sender expects the connection to stay open after this message: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    func keepsAlive(_ version: HTTPVersion) -> Bool {
        version.minor >= 1 ? !connectionClose : connectionKeepAlive && !connectionClose
    }
}
