import NIOCore
import NIOHTTP1

/// A failure the proxy answers itself, with a status and a short JSON body.
enum ProxyError: Equatable {
    case malformedRequest(String)
    case headersTooLarge
    case bodyTooLarge(limit: Int)
    case upgradeNotSupported
    case connectNotSupported
    case clientTimeout
    case clientHeaderTimeout
    case expectationFailed
    case versionNotSupported
    case tooManyConnections
    /// `max_websocket_connections` tunnels are open.
    case tooManyTunnels
    case upstreamUnreachable(String)
    case invalidUpstreamResponse(String)
    case upstreamClosedEarly
    case connectTimeout
    case firstByteTimeout
    case idleTimeout

    var status: HTTPResponseStatus {
        switch self {
        case .malformedRequest: return .badRequest
        case .headersTooLarge: return .init(statusCode: 431, reasonPhrase: "Request Header Fields Too Large")
        case .bodyTooLarge: return .payloadTooLarge
        case .upgradeNotSupported, .connectNotSupported: return .notImplemented
        case .clientTimeout, .clientHeaderTimeout: return .requestTimeout
        case .expectationFailed: return .expectationFailed
        case .versionNotSupported: return .httpVersionNotSupported
        case .tooManyConnections, .tooManyTunnels: return .serviceUnavailable
        case .upstreamUnreachable, .upstreamClosedEarly, .invalidUpstreamResponse: return .badGateway
        case .connectTimeout, .firstByteTimeout, .idleTimeout: return .gatewayTimeout
        }
    }

    var message: String {
        switch self {
        case .malformedRequest(let why): return "malformed request: \(why)"
        case .headersTooLarge: return "request headers too large"
        case .bodyTooLarge(let limit): return "request body larger than the limit of \(limit) bytes"
        case .upgradeNotSupported: return "the only protocol upgrade this proxy supports is to websocket"
        case .connectNotSupported: return "CONNECT tunnelling is not supported by this proxy"
        case .clientTimeout: return "the client sent no request body data within the client body timeout"
        case .clientHeaderTimeout: return "the client did not send a complete request head within the client header timeout"
        case .expectationFailed: return "the only expectation supported is 100-continue"
        case .versionNotSupported: return "only HTTP/1.x is served on this port"
        case .tooManyConnections: return "too many open connections; try again later"
        case .tooManyTunnels: return "too many open WebSocket connections; try again later"
        case .invalidUpstreamResponse(let why): return "invalid response from upstream: \(why)"
        case .upstreamUnreachable(let why): return "upstream unreachable: \(why)"
        case .upstreamClosedEarly: return "upstream closed the connection before responding"
        case .connectTimeout: return "upstream connect timed out"
        case .firstByteTimeout: return "upstream sent no response within the first-byte timeout"
        case .idleTimeout: return "upstream went silent for longer than the idle timeout"
        }
    }

    /// How the exchange is reported to observers.
    var outcome: ExchangeOutcome {
        switch self {
        case .malformedRequest, .headersTooLarge, .bodyTooLarge, .upgradeNotSupported, .connectNotSupported,
            .clientTimeout, .clientHeaderTimeout, .expectationFailed, .versionNotSupported, .tooManyConnections, .tooManyTunnels:
            return .rejected(message)
        case .upstreamUnreachable, .upstreamClosedEarly, .invalidUpstreamResponse: return .upstreamFailed(message)
        case .connectTimeout, .firstByteTimeout, .idleTimeout: return .upstreamTimeout(message)
        }
    }

    /// The whole answer: status line in the client's version, JSON body, the request id and any
    /// `extraHeaders`, and `connection: close` when the connection closes after it.
    func response(
        requestID: String, requestIDHeader: String, version: HTTPVersion, closes: Bool,
        extraHeaders: [(name: String, value: String)] = [], allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let body = jsonBody(requestID: requestID, allocator: allocator)
        var bytes = allocator.buffer(capacity: 256 + body.readableBytes)
        bytes.writeString(version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        bytes.writeString("\(status.code) \(status.reasonPhrase)\r\n")
        bytes.writeStaticString("content-type: application/json\r\ncontent-length: ")
        bytes.writeDecimal(body.readableBytes)
        bytes.writeStaticString("\r\n")
        bytes.writeString("\(requestIDHeader): \(requestID)\r\n")
        for field in extraHeaders { bytes.writeString("\(field.name): \(field.value)\r\n") }
        if closes {
            bytes.writeStaticString("connection: close\r\n")
        } else if version.minor == 0 {
            bytes.writeStaticString("connection: keep-alive\r\n")
        }
        bytes.writeStaticString("\r\n")
        bytes.writeImmutableBuffer(body)
        return bytes
    }

    /// `{"error": "...", "request_id": "..."}`
    func jsonBody(requestID: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 96 + requestID.utf8.count)
        buffer.writeStaticString("{\"error\":")
        buffer.writeJSONString(message)
        buffer.writeStaticString(",\"request_id\":")
        buffer.writeJSONString(requestID)
        buffer.writeStaticString("}")
        return buffer
    }
}

extension ByteBuffer {
    /// Writes `string` as a JSON string literal, escaping quotes, backslashes and control characters.
    public mutating func writeJSONString(_ string: String) {
        writeInteger(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): writeStaticString("\\\"")
            case UInt8(ascii: "\\"): writeStaticString("\\\\")
            case 0x0A: writeStaticString("\\n")
            case 0x0D: writeStaticString("\\r")
            case 0x09: writeStaticString("\\t")
            case 0..<0x20:
                writeStaticString("\\u00")
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                writeInteger(hex[Int(byte >> 4)])
                writeInteger(hex[Int(byte & 0xF)])
            default: writeInteger(byte)
            }
        }
        writeInteger(UInt8(ascii: "\""))
    }
}
