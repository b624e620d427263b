import NIOCore
import NIOHTTP1

/// The request head sent upstream, and what the proxy learnt while building it.
struct UpstreamRequest {
    /// The head's bytes, ready to write.
    var head: ByteBuffer
    var requestID: String
    /// True when the client sent no request id and one was generated.
    var requestIDWasGenerated: Bool
    var framing: BodyFraming
    /// The declared body length when `framing` is `.contentLength`.
    var contentLength: Int
}

/// Turns a client's request head into the bytes of the head sent upstream, following RFC 9110's proxy rules.
///
/// Works on the client's bytes directly: kept fields are copied as they came (line endings normalised),
/// dropped ones are skipped, added ones appended. One pass; no strings but the request id.
struct RequestHeadRewriter {
    let upstreamHostHeader: String
    let basePath: String
    let preserveHost: Bool
    let forwardedHeaders: ProxyConfiguration.ForwardedHeaders
    let requestIDHeader: String
    /// The listener's scheme, sent as `X-Forwarded-Proto`.
    let scheme: String

    init(configuration: ProxyConfiguration, upstream: ProxyConfiguration.Upstream? = nil, scheme: String = "http") {
        self.scheme = scheme
        self.upstreamHostHeader = (upstream ?? configuration.upstream).hostHeader
        self.basePath = (upstream ?? configuration.upstream).basePath
        self.preserveHost = configuration.preserveHost
        self.forwardedHeaders = configuration.forwardedHeaders
        self.requestIDHeader = configuration.requestIDHeader
    }

    /// The upstream head for `client`, or nil when its request target cannot be forwarded.
    ///   - requestID: the id to send when the client sent none (`client.facts.requestIDField` is nil).
    ///   - extraFields: set on the upstream request, replacing the client's fields of the same names.
    func rewrite(
        _ client: RequestHead, clientIP: String?, requestID generatedID: @autoclosure () -> String,
        extraFields: [(name: String, value: String)] = [], allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> UpstreamRequest? {
        let bytes = client.bytes
        let facts = client.facts
        let fields = client.fields
        let isOriginForm = bytes.getInteger(at: bytes.readerIndex + client.targetRange.lowerBound, as: UInt8.self) == UInt8(ascii: "/")
        var absoluteTarget: String?
        if !isOriginForm {
            guard let target = Self.originForm(client.uri) else { return nil }
            absoluteTarget = target
        }
        let addsXForwarded = forwardedHeaders.addsXForwarded
        let addsVia = forwardedHeaders.addsVia
        let framing: BodyFraming =
            facts.hasTransferEncoding ? .chunked : (facts.contentLength.map { $0 > 0 ? .contentLength : .none } ?? .none)
        // A WebSocket handshake keeps its `Upgrade` and `Connection: upgrade`: the upstream must see them
        // to switch protocols (RFC 9110 §7.8). Every other hop-by-hop field is dropped as usual.
        let upgrading = facts.connectionUpgrade && facts.upgradeOnlyWebSocket

        // Room for every added field, so the head is written into one allocation (no regrowth).
        var out = allocator.buffer(
            capacity: bytes.readableBytes + upstreamHostHeader.utf8.count + basePath.utf8.count + requestIDHeader.utf8.count + 256
                + Self.length(of: extraFields))
        var clientHost: Range<Int>?
        var priorForwardedFor: String?
        var priorVia: String?
        bytes.withUnsafeReadableBytes { raw in
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[0..<client.targetRange.lowerBound]))  // method and space
            if let absoluteTarget {
                if absoluteTarget != "*" { out.writeString(basePath) }
                out.writeString(absoluteTarget)
            } else {
                out.writeString(basePath)
                out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[client.targetRange]))
            }
            out.writeStaticString(" HTTP/1.1\r\n")
            if !preserveHost {
                out.writeStaticString("Host: ")
                out.writeString(upstreamHostHeader)
                out.writeStaticString("\r\n")
            }
            for field in fields {
                switch field.kind {
                case .upgrade where upgrading:
                    break
                case .transferEncoding, .contentLength, .connection, .upgrade, .hopByHop, .expect:
                    continue  // framing is written below; `Expect` is answered by the proxy
                case .host:
                    if clientHost == nil { clientHost = field.valueStart..<field.valueEnd }
                    if !preserveHost { continue }
                case .forwardedFor where addsXForwarded:
                    let value = String(decoding: UnsafeRawBufferPointer(rebasing: raw[field.valueStart..<field.valueEnd]), as: UTF8.self)
                    priorForwardedFor = priorForwardedFor.map { $0 + ", " + value } ?? value
                    continue
                case .forwardedProto where addsXForwarded, .forwardedHost where addsXForwarded:
                    continue
                case .via where addsVia:
                    let value = String(decoding: UnsafeRawBufferPointer(rebasing: raw[field.valueStart..<field.valueEnd]), as: UTF8.self)
                    priorVia = priorVia.map { $0 + ", " + value } ?? value
                    continue
                default:
                    break
                }
                if !facts.connectionNamed.isEmpty && Self.isNamed(field, in: facts.connectionNamed, raw) { continue }
                if !extraFields.isEmpty && Self.isReplaced(field, by: extraFields, raw) { continue }
                out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[field.nameStart..<field.valueEnd]))
                out.writeStaticString("\r\n")
            }
            if preserveHost && clientHost == nil {
                out.writeStaticString("Host: ")
                out.writeString(upstreamHostHeader)
                out.writeStaticString("\r\n")
            }
            if upgrading { out.writeStaticString("Connection: upgrade\r\n") }
            // The one framing field, written from the parsed facts (duplicates and lists collapse to one value).
            if framing == .chunked {
                out.writeStaticString("Transfer-Encoding: chunked\r\n")
            } else if let length = facts.contentLength {
                out.writeStaticString("Content-Length: ")
                out.writeDecimal(length)
                out.writeStaticString("\r\n")
            }
            if addsXForwarded {
                if clientIP != nil || priorForwardedFor != nil {
                    out.writeStaticString("X-Forwarded-For: ")
                    switch (priorForwardedFor, clientIP) {
                    case (let prior?, let ip?): out.writeString(prior + ", " + ip)
                    case (let prior?, nil): out.writeString(prior)
                    case (nil, let ip?): out.writeString(ip)
                    case (nil, nil): break
                    }
                    out.writeStaticString("\r\n")
                }
                out.writeStaticString("X-Forwarded-Proto: ")
                out.writeString(scheme)
                out.writeStaticString("\r\n")
                if let clientHost {
                    out.writeStaticString("X-Forwarded-Host: ")
                    out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[clientHost]))
                    out.writeStaticString("\r\n")
                }
            }
            if addsVia {
                out.writeStaticString("Via: ")
                if let priorVia { out.writeString(priorVia + ", ") }
                out.writeStaticString("1.1 tracegate\r\n")
            }
        }
        for field in extraFields {
            out.writeString(field.name)
            out.writeStaticString(": ")
            out.writeString(field.value)
            out.writeStaticString("\r\n")
        }
        let requestID: String
        if let index = facts.requestIDField {
            requestID = client.headers.value(at: index)
        } else {
            requestID = generatedID()
            out.writeString(requestIDHeader)
            out.writeStaticString(": ")
            out.writeString(requestID)
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("\r\n")
        return UpstreamRequest(
            head: out, requestID: requestID, requestIDWasGenerated: facts.requestIDField == nil, framing: framing,
            contentLength: facts.contentLength ?? 0)
    }

    /// True when `field`'s name is one of the names listed in `Connection`.
    static func isNamed(_ field: HeadField, in named: [Range<Int>], _ raw: UnsafeRawBufferPointer) -> Bool {
        let length = field.nameEnd - field.nameStart
        for range in named where range.count == length {
            var same = true
            for offset in 0..<length where lowerASCII(raw[field.nameStart + offset]) != lowerASCII(raw[range.lowerBound + offset]) {
                same = false
                break
            }
            if same { return true }
        }
        return false
    }

    /// Whether `head`'s request target can be forwarded (origin-form, `*`, or an http(s) absolute-form).
    static func isForwardable(_ head: RequestHead) -> Bool {
        head.bytes.getInteger(at: head.bytes.readerIndex + head.targetRange.lowerBound, as: UInt8.self) == UInt8(ascii: "/")
            || originForm(head.uri) != nil
    }

    /// Bytes that `fields` take as header lines.
    static func length(of fields: [(name: String, value: String)]) -> Int {
        fields.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
    }

    /// True when `field` is named in `replacements` (ASCII case-insensitive).
    static func isReplaced(_ field: HeadField, by replacements: [(name: String, value: String)], _ raw: UnsafeRawBufferPointer) -> Bool {
        let length = field.nameEnd - field.nameStart
        return replacements.contains { replacement in
            guard replacement.name.utf8.count == length else { return false }
            var index = field.nameStart
            for byte in replacement.name.utf8 {
                if lowerASCII(raw[index]) != lowerASCII(byte) { return false }
                index += 1
            }
            return true
        }
    }

    /// The origin-form of a request target: `/path?query` or `*`; absolute-form is reduced to its path.
    static func originForm(_ uri: String) -> String? {
        if uri.utf8.first == UInt8(ascii: "/") || uri == "*" { return uri }
        guard let schemeEnd = uri.firstRange(of: "://") else { return nil }
        let scheme = uri[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else { return nil }
        let rest = uri[schemeEnd.upperBound...]
        guard !rest.isEmpty else { return nil }
        if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) {
            let pathAndQuery = rest[slash...]
            return pathAndQuery.first == "?" ? "/" + pathAndQuery : String(pathAndQuery)
        }
        return "/"
    }
}
