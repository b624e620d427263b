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
    func rewrite(
        _ clientHead: HTTPRequestHead, clientIP: String?, ids: inout RequestIDGenerator, scheme: String = "http"
    ) -> UpstreamRequest? {
        guard let target = Self.originForm(clientHead.uri) else { return nil }
        var headers = clientHead.headers
        let framing: BodyFraming =
            headers.hasTransferEncoding ? .chunked : (headers.contains(name: "content-length") ? .contentLength : .none)
        HopByHop.strip(&headers)
        if framing == .chunked { headers.add(name: "transfer-encoding", value: "chunked") }

        let clientHost = headers.first(name: "host")
        if !preserveHost || clientHost == nil {
            headers.replaceOrAdd(name: "host", value: upstreamHostHeader)
        }
        if forwardedHeaders.addsXForwarded {
            if let clientIP {
                let prior = headers[canonicalForm: "x-forwarded-for"]
                if prior.isEmpty {
                    headers.add(name: "X-Forwarded-For", value: clientIP)
                } else {
                    headers.replaceOrAdd(name: "X-Forwarded-For", value: prior.joined(separator: ", ") + ", " + clientIP)
                }
            }
            headers.replaceOrAdd(name: "X-Forwarded-Proto", value: scheme)
            if let clientHost { headers.replaceOrAdd(name: "X-Forwarded-Host", value: clientHost) }
        }
        if forwardedHeaders.addsVia {
            let via = "1.1 tracegate"
            if let prior = headers.first(name: "via") {
                headers.replaceOrAdd(name: "Via", value: prior + ", " + via)
            } else {
                headers.add(name: "Via", value: via)
            }
        }

        let requestID: String
        let generated: Bool
        if let given = headers.first(name: requestIDHeader), !given.isEmpty {
            requestID = given
            generated = false
        } else {
            requestID = ids.generate()
            generated = true
            headers.replaceOrAdd(name: requestIDHeader, value: requestID)
        }

        var head = HTTPRequestHead(version: .http1_1, method: clientHead.method, uri: basePath + target, headers: headers)
        if basePath.isEmpty || target == "*" { head.uri = target }
        return UpstreamRequest(head: head, requestID: requestID, requestIDWasGenerated: generated, framing: framing)
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
        var headers = upstreamHead.headers
        let code = upstreamHead.status.code
        let statusHasBody = !(code < 200 || code == 204 || code == 304)
        let upstreamFraming: BodyFraming
        if requestIsHEAD || !statusHasBody {
            upstreamFraming = .none
        } else if headers.hasTransferEncoding {
            upstreamFraming = .chunked
        } else if headers.contains(name: "content-length") {
            upstreamFraming = .contentLength
        } else {
            upstreamFraming = .untilClose
        }

        let advertisedChunked = headers.hasTransferEncoding
        HopByHop.strip(&headers)
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
        if code >= 200 && !headers.contains(name: requestIDHeader) {
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
