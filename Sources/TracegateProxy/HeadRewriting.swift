import NIOHTTP1

/// The request head sent upstream, and what the proxy learnt while building it.
struct UpstreamRequest {
    var head: HTTPRequestHead
    var requestID: String
    /// True when the client sent no request id and one was generated.
    var requestIDWasGenerated: Bool
    var framing: BodyFraming
}

/// Turns a client's request head into the head sent upstream, following RFC 9110's proxy rules.
struct RequestHeadRewriter {
    let upstreamHostHeader: String
    let basePath: String
    let preserveHost: Bool
    let forwardedHeaders: ProxyConfiguration.ForwardedHeaders
    let requestIDHeader: String

    init(configuration: ProxyConfiguration) {
        self.upstreamHostHeader = configuration.upstream.hostHeader
        self.basePath = configuration.upstream.basePath
        self.preserveHost = configuration.preserveHost
        self.forwardedHeaders = configuration.forwardedHeaders
        self.requestIDHeader = configuration.requestIDHeader
    }

    /// The upstream head for `clientHead`, or nil when its request target cannot be forwarded.
    ///
    /// Built in one pass over the client's fields (plus a first look for `Connection`): this runs
    /// for every request, so it avoids the repeated scans of `HTTPHeaders.replaceOrAdd`.
    func rewrite(
        _ clientHead: HTTPRequestHead, clientIP: String?, ids: inout RequestIDGenerator, scheme: String = "http"
    ) -> UpstreamRequest? {
        guard let target = Self.originForm(clientHead.uri) else { return nil }
        let named = HopByHop.namedInConnection(clientHead.headers)
        let addsXForwarded = forwardedHeaders.addsXForwarded
        let addsVia = forwardedHeaders.addsVia

        var headers = HTTPHeaders()
        headers.reserveCapacity(clientHead.headers.count + 6)
        var framing = BodyFraming.none
        var clientHost: String?
        var priorForwardedFor: String?
        var priorVia: String?
        var givenRequestID: String?
        if !preserveHost { headers.add(name: "Host", value: upstreamHostHeader) }

        for (name, value) in clientHead.headers {
            switch RequestField(name, requestIDHeader: requestIDHeader) {
            case .hopByHop:
                continue
            case .transferEncoding:
                framing = .chunked
                continue
            case .contentLength:
                if framing == .none { framing = .contentLength }
            case .host:
                if clientHost == nil { clientHost = value }
                if !preserveHost { continue }
            case .forwardedFor where addsXForwarded:
                priorForwardedFor = priorForwardedFor.map { $0 + ", " + value } ?? value
                continue
            case .forwardedProto where addsXForwarded, .forwardedHost where addsXForwarded:
                continue
            case .via where addsVia:
                priorVia = priorVia.map { $0 + ", " + value } ?? value
                continue
            case .requestID:
                if givenRequestID == nil, !value.isEmpty { givenRequestID = value }
            case .other, .forwardedFor, .forwardedProto, .forwardedHost, .via:
                break
            }
            if !named.isEmpty, named.contains(where: { name.equalsIgnoringASCIICase($0) }) { continue }
            headers.add(name: name, value: value)
        }

        if preserveHost && clientHost == nil { headers.add(name: "Host", value: upstreamHostHeader) }
        if framing == .chunked { headers.add(name: "Transfer-Encoding", value: "chunked") }
        if addsXForwarded {
            if let clientIP {
                headers.add(name: "X-Forwarded-For", value: priorForwardedFor.map { $0 + ", " + clientIP } ?? clientIP)
            } else if let priorForwardedFor {
                headers.add(name: "X-Forwarded-For", value: priorForwardedFor)
            }
            headers.add(name: "X-Forwarded-Proto", value: scheme)
            if let clientHost { headers.add(name: "X-Forwarded-Host", value: clientHost) }
        }
        if addsVia { headers.add(name: "Via", value: priorVia.map { $0 + ", 1.1 tracegate" } ?? "1.1 tracegate") }

        let requestID: String
        if let givenRequestID {
            requestID = givenRequestID
        } else {
            requestID = ids.generate()
            headers.add(name: requestIDHeader, value: requestID)
        }
        let uri = basePath.isEmpty || target == "*" ? target : basePath + target
        let head = HTTPRequestHead(version: .http1_1, method: clientHead.method, uri: uri, headers: headers)
        return UpstreamRequest(head: head, requestID: requestID, requestIDWasGenerated: givenRequestID == nil, framing: framing)
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

/// The request fields the rewriter treats specially, recognised by length first, then by name.
private enum RequestField {
    case hopByHop, transferEncoding, contentLength, host, forwardedFor, forwardedProto, forwardedHost, via, requestID, other

    @inline(__always)
    init(_ name: String, requestIDHeader: String) {
        switch name.utf8.count {
        case 3: self = name.equalsLowercased("via") ? .via : .other
        case 4: self = name.equalsLowercased("host") ? .host : .other
        case 14: self = name.equalsLowercased("content-length") ? .contentLength : .other
        case 15: self = name.equalsLowercased("x-forwarded-for") ? .forwardedFor : .other
        case 16: self = name.equalsLowercased("x-forwarded-host") ? .forwardedHost : .other
        case 17:
            if name.equalsLowercased("transfer-encoding") { self = .transferEncoding; return }
            self = name.equalsLowercased("x-forwarded-proto") ? .forwardedProto : .other
        default: self = .other
        }
        if case .other = self {
            if HopByHop.classify(name).hopByHop {
                self = .hopByHop
            } else if name.utf8.count == requestIDHeader.utf8.count && name.equalsIgnoringASCIICase(requestIDHeader) {
                self = .requestID
            }
        }
    }
}

/// The response head sent to the client, and how both sides frame the body.
struct ClientResponse {
    var head: HTTPResponseHead
    /// How the upstream delimits the body it sends.
    var upstreamFraming: BodyFraming
    /// True when the client connection must close after this response.
    var closeAfter: Bool
}

/// Turns an upstream response head into the head sent to the client.
struct ResponseHeadRewriter {
    let requestIDHeader: String

    /// - Parameters:
    ///   - requestIsHEAD: the request was a HEAD, so the response has no body whatever it says.
    ///   - clientVersion: the client's HTTP version (1.0 clients get close-delimited bodies).
    ///   - keepClientAlive: whether the client connection may stay open after this exchange.
    func rewrite(
        _ upstreamHead: HTTPResponseHead, requestIsHEAD: Bool, clientVersion: HTTPVersion,
        keepClientAlive: Bool, requestID: String
    ) -> ClientResponse {
        let code = upstreamHead.status.code
        let statusHasBody = !(code < 200 || code == 204 || code == 304)
        let named = HopByHop.namedInConnection(upstreamHead.headers)
        var headers = HTTPHeaders()
        headers.reserveCapacity(upstreamHead.headers.count + 3)
        var advertisedChunked = false
        var hasContentLength = false
        var hasRequestID = false
        for (name, value) in upstreamHead.headers {
            let kind = HopByHop.classify(name)
            if kind.hopByHop {
                if name.utf8.count == 17 { advertisedChunked = true }  // transfer-encoding
                continue
            }
            if !named.isEmpty, named.contains(where: { name.equalsIgnoringASCIICase($0) }) { continue }
            if name.utf8.count == 14 && name.equalsLowercased("content-length") {
                hasContentLength = true
            } else if !hasRequestID && name.equalsIgnoringASCIICase(requestIDHeader) {
                hasRequestID = true
            }
            headers.add(name: name, value: value)
        }
        let upstreamFraming: BodyFraming
        if requestIsHEAD || !statusHasBody {
            upstreamFraming = .none
        } else if advertisedChunked {
            upstreamFraming = .chunked
        } else if hasContentLength {
            upstreamFraming = .contentLength
        } else {
            upstreamFraming = .untilClose
        }

        var closeAfter = !keepClientAlive
        switch upstreamFraming {
        case .contentLength:
            break
        case .none:
            // A HEAD response may advertise the coding a GET would have had; the encoder sends no body.
            if requestIsHEAD && advertisedChunked && clientVersion.minor >= 1 {
                headers.add(name: "transfer-encoding", value: "chunked")
            }
        case .chunked, .untilClose:
            if clientVersion.major == 1 && clientVersion.minor >= 1 {
                headers.add(name: "transfer-encoding", value: "chunked")
            } else {
                closeAfter = true  // an HTTP/1.0 client reads to the end of the connection
            }
        }
        if code >= 200 && !hasRequestID {
            headers.add(name: requestIDHeader, value: requestID)
        }
        if code >= 200 {
            if closeAfter {
                headers.add(name: "connection", value: "close")
            } else if clientVersion.major == 1 && clientVersion.minor == 0 {
                headers.add(name: "connection", value: "keep-alive")
            }
        }
        let head = HTTPResponseHead(version: clientVersion, status: upstreamHead.status, headers: headers)
        return ClientResponse(head: head, upstreamFraming: upstreamFraming, closeAfter: closeAfter)
    }
}
