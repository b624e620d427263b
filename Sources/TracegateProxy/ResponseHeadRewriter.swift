import NIOCore
import NIOHTTP1

/// How the upstream delimits a response body (RFC 9112 §6.3).
enum ResponseFraming {
    /// Nil when the response's framing is invalid (disagreeing or malformed `Content-Length`).
    static func of(_ head: ResponseHead, requestIsHEAD: Bool) -> BodyFraming? {
        let code = head.status.code
        if requestIsHEAD || code < 200 || code == 204 || code == 304 { return BodyFraming.none }
        let facts = head.facts
        if facts.hasTransferEncoding { return facts.transferEncodingChunked ? .chunked : .untilClose }
        if facts.contentLengthCount > 0 {
            if facts.contentLengthInvalid || facts.contentLengthConflict { return nil }
            return .contentLength
        }
        return .untilClose
    }
}

/// The response head sent to the client, and how the body is passed on.
struct ClientResponse {
    var head: ByteBuffer
    /// The body is re-framed in chunked coding for the client (chunked or close-delimited upstream, HTTP/1.1 client).
    var chunked: Bool
    /// True when the client connection must close after this response.
    var closeAfter: Bool
}

/// Turns an upstream response head into the bytes of the head sent to the client.
struct ResponseHeadRewriter {
    let requestIDHeader: String

    /// - Parameters:
    ///   - framing: how the upstream delimits the body (`ResponseFraming.of`).
    ///   - requestIsHEAD: the request was a HEAD, so the response has no body whatever it says.
    ///   - clientVersion: the client's HTTP version (1.0 clients get close-delimited bodies).
    ///   - keepClientAlive: whether the client connection may stay open after this exchange.
    ///   - extraHeaders: fields added for the client (e.g. the trace id).
    func rewrite(
        _ upstream: ResponseHead, framing: BodyFraming, requestIsHEAD: Bool, clientVersion: HTTPVersion,
        keepClientAlive: Bool, requestID: String, extraHeaders: [(name: String, value: String)] = [],
        timing: ServerTiming? = nil, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ClientResponse {
        let clientIs11 = clientVersion.minor >= 1
        // Room for every added field (Server-Timing is at most ~100 bytes), so the head takes one allocation.
        var out = allocator.buffer(
            capacity: upstream.bytes.readableBytes + 192 + requestIDHeader.utf8.count + requestID.utf8.count
                + RequestHeadRewriter.length(of: extraHeaders))
        var hasRequestID = false
        Self.writeStatusLineAndFields(upstream, clientVersion: clientVersion, into: &out) { field in
            if field.kind == .requestID { hasRequestID = true }
        }
        var closeAfter = !keepClientAlive
        var chunked = false
        switch framing {
        case .contentLength:
            Self.writeContentLength(upstream.facts.contentLength ?? 0, into: &out)
        case .none:
            // A HEAD or 304 response may advertise the framing a GET would have had.
            if requestIsHEAD && upstream.facts.transferEncodingChunked && clientIs11 {
                out.writeStaticString("transfer-encoding: chunked\r\n")
            } else if let length = upstream.facts.contentLength, !upstream.facts.hasTransferEncoding,
                !upstream.facts.contentLengthInvalid, !upstream.facts.contentLengthConflict,
                upstream.status.code >= 200, upstream.status.code != 204
            {
                Self.writeContentLength(length, into: &out)
            }
        case .chunked, .untilClose:
            if clientIs11 {
                chunked = true
                out.writeStaticString("transfer-encoding: chunked\r\n")
            } else {
                closeAfter = true  // an HTTP/1.0 client reads to the end of the connection
            }
        }
        if !hasRequestID {
            out.writeString(requestIDHeader)
            out.writeStaticString(": ")
            out.writeString(requestID)
            out.writeStaticString("\r\n")
        }
        timing?.write(into: &out)
        for field in extraHeaders {
            out.writeString(field.name)
            out.writeStaticString(": ")
            out.writeString(field.value)
            out.writeStaticString("\r\n")
        }
        if closeAfter {
            out.writeStaticString("connection: close\r\n")
        } else if !clientIs11 {
            out.writeStaticString("connection: keep-alive\r\n")
        }
        out.writeStaticString("\r\n")
        return ClientResponse(head: out, chunked: chunked, closeAfter: closeAfter)
    }

    private static func writeContentLength(_ length: Int, into out: inout ByteBuffer) {
        out.writeStaticString("content-length: ")
        out.writeDecimal(length)
        out.writeStaticString("\r\n")
    }

    /// An interim (1xx) response for the client: hop-by-hop fields removed, nothing added.
    func informational(_ upstream: ResponseHead, clientVersion: HTTPVersion, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: upstream.bytes.readableBytes + 8)
        Self.writeStatusLineAndFields(upstream, clientVersion: clientVersion, into: &out) { _ in }
        out.writeStaticString("\r\n")
        return out
    }

    /// The status line in the client's version, then every end-to-end field as the upstream sent it.
    private static func writeStatusLineAndFields(
        _ upstream: ResponseHead, clientVersion: HTTPVersion, into out: inout ByteBuffer,
        _ visit: (HeadField) -> Void
    ) {
        let named = upstream.facts.connectionNamed
        upstream.bytes.withUnsafeReadableBytes { raw in
            if clientVersion.minor >= 1 {
                out.writeStaticString("HTTP/1.1")
            } else {
                out.writeStaticString("HTTP/1.0")
            }
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[upstream.statusRange]))
            out.writeStaticString("\r\n")
            for field in upstream.fields {
                // Framing fields are written by the caller from the parsed facts.
                if field.kind.isHopByHop || field.kind == .contentLength { continue }
                if !named.isEmpty && RequestHeadRewriter.isNamed(field, in: named, raw) { continue }
                visit(field)
                out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[field.nameStart..<field.valueEnd]))
                out.writeStaticString("\r\n")
            }
        }
    }
}
