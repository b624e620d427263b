import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Receives one upstream connection's events while it serves an exchange.
protocol UpstreamOwner: AnyObject {
    /// An interim (1xx) response; the final one follows.
    func upstreamInformational(_ head: ResponseHead)
    func upstreamHead(_ head: ResponseHead, framing: BodyFraming)
    func upstreamBody(_ bytes: ByteBuffer)
    /// The response is complete; `trailers` holds a chunked body's trailer field lines, if any.
    /// `nothingFollowed` is false when more bytes arrived right behind the response: bytes nobody asked
    /// for, so the connection must not serve another exchange.
    func upstreamEnd(trailers: ByteBuffer?, nothingFollowed: Bool)
    func upstreamReadComplete()
    func upstreamClosed(_ connection: UpstreamConnection, error: Error?)
    func upstreamWritabilityChanged()
    /// `101 Switching Protocols` to an upgrade request: from now on the connection's bytes are the
    /// tunnel's (`upstreamTunnelBytes`), not HTTP.
    func upstreamSwitchedProtocols(_ head: ResponseHead)
    func upstreamTunnelBytes(_ bytes: ByteBuffer)
    /// The upstream finished sending in a tunnel (half-closed its side).
    func upstreamFinishedSending(_ connection: UpstreamConnection)
    /// False while the client cannot take more bytes: upstream reads are then held (backpressure).
    var mayReadUpstream: Bool { get }
}

/// The upstream sent something that is not a valid HTTP/1 response.
struct UpstreamProtocolError: Error, CustomStringConvertible {
    let reason: String
    var description: String { "invalid response from upstream: \(reason)" }
}

/// The last handler of an upstream connection: parses responses from the socket's bytes and relays
/// them to the exchange that owns the connection.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Largest response head accepted from the upstream.
    static let maxResponseHeadBytes = 64 * 1024

    var owner: UpstreamOwner?
    weak var connection: UpstreamConnection?
    private var context: ChannelHandlerContext?
    private var readPending = false
    private var lastError: Error?
    private var headParser: HeadParser
    private var inbound: ByteBuffer?
    private var body: BodyReader?
    private var awaitingHead = false
    private var requestIsHEAD = false
    /// The request asked to upgrade to WebSocket: a `101` is its answer.
    private var requestUpgrades = false
    /// After a `101`: every byte goes to the owner as it came.
    private var tunnelling = false
    /// Called once when the channel closes (removes it from the pool's idle list).
    var onClose: ((UpstreamHandler) -> Void)?

    init(requestIDHeader: String = "X-Request-ID") {
        headParser = HeadParser(requestIDHeader: requestIDHeader, maxHeadBytes: Self.maxResponseHeadBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// A request was sent: the next bytes are its response.
    func expectResponse(requestIsHEAD: Bool, upgrading: Bool = false) {
        self.requestIsHEAD = requestIsHEAD
        self.requestUpgrades = upgrading
        awaitingHead = true
        body = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if tunnelling {
            owner?.upstreamTunnelBytes(bytes)
            return
        }
        guard owner != nil, awaitingHead || body != nil else {
            // An idle pooled connection must not receive anything: it is unusable now.
            context.close(promise: nil)
            return
        }
        if inbound == nil {
            inbound = bytes
        } else {
            inbound!.writeBuffer(&bytes)
        }
        guard var buffer = inbound else { return }
        inbound = nil
        do {
            try consume(&buffer)
        } catch {
            lastError = (error as? UpstreamProtocolError) ?? UpstreamProtocolError(reason: "\(error)")
            context.close(promise: nil)
            return
        }
        if buffer.readableBytes > 0 {
            if tunnelling {
                owner?.upstreamTunnelBytes(buffer)  // the first tunnel bytes came with the 101
            } else if awaitingHead || body != nil {
                inbound = buffer
            } else {
                context.close(promise: nil)  // bytes after a complete response: the connection is unusable
            }
        }
    }

    private func consume(_ buffer: inout ByteBuffer) throws {
        while let owner {
            if body != nil {
                switch try body!.next(&buffer) {
                case .data(let slice):
                    owner.upstreamBody(slice)
                case .end(let trailers):
                    body = nil
                    owner.upstreamEnd(trailers: trailers, nothingFollowed: buffer.readableBytes == 0)
                    return
                case .needMore:
                    return
                }
            } else if awaitingHead {
                let length: Int?
                do {
                    length = try headParser.headLength(in: &buffer)
                } catch {
                    throw UpstreamProtocolError(reason: "response head larger than \(Self.maxResponseHeadBytes) bytes")
                }
                guard let length else { return }
                let head: ResponseHead
                do {
                    head = try headParser.parseResponse(buffer.readSlice(length: length)!)
                } catch HeadError.malformed(let why) {
                    throw UpstreamProtocolError(reason: why)
                }
                let code = head.status.code
                if code == 101 {
                    // Only a WebSocket upgrade is forwarded: a switch of protocols to anything else is an
                    // answer to nothing.
                    guard requestUpgrades else {
                        throw UpstreamProtocolError(reason: "101 Switching Protocols without an upgrade request")
                    }
                    awaitingHead = false
                    tunnelling = true
                    owner.upstreamSwitchedProtocols(head)
                    return
                }
                if code < 200 {
                    owner.upstreamInformational(head)
                    continue
                }
                guard let framing = ResponseFraming.of(head, requestIsHEAD: requestIsHEAD) else {
                    throw UpstreamProtocolError(reason: "invalid Content-Length")
                }
                awaitingHead = false
                body = BodyReader(framing: framing, contentLength: head.facts.contentLength ?? 0)
                owner.upstreamHead(head, framing: framing)
            } else {
                return
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose?(self)
        onClose = nil
        if let owner, let connection {
            self.owner = nil
            owner.upstreamClosed(connection, error: lastError)
        }
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        lastError = error
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Half-closure is allowed only on a tunnel's connection (set when it opens).
        if let event = event as? ChannelEvent, event == .inputClosed, tunnelling, let connection {
            owner?.upstreamFinishedSending(connection)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.upstreamWritabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let owner, !owner.mayReadUpstream {
            readPending = true
        } else {
            context.read()
        }
    }

    /// Re-issues a read that was held for backpressure.
    func resumeReading() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    func write(_ bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    func flush() { context?.flush() }
}
