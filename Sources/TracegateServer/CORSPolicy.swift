/// Which web pages may post feedback from a browser (`feedback_cors_origins`), and the CORS headers
/// that say so. Credentials (cookies) are allowed for the listed origins, never for any other.
struct CORSPolicy: Sendable {
    /// Lowercased `scheme://host[:port]`.
    let origins: Set<String>

    init(origins: [String]) { self.origins = Set(origins.map { $0.lowercased() }) }

    func allows(_ origin: String) -> Bool { origins.contains(origin.lowercased()) }

    /// The answer to a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`): nil
    /// when the origin is not listed or the method is not POST.
    func preflight(origin: String, method: String?, requestHeaders: String?) -> [(String, String)]? {
        guard allows(origin), method == nil || method == "POST" else { return nil }
        var headers = responseHeaders(origin: origin)
        headers.append(("Access-Control-Allow-Methods", "POST"))
        if let requestHeaders, !requestHeaders.isEmpty { headers.append(("Access-Control-Allow-Headers", requestHeaders)) }
        headers.append(("Access-Control-Max-Age", "600"))
        return headers
    }

    /// Headers for an actual response to a listed origin.
    func responseHeaders(origin: String) -> [(String, String)] {
        [("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Credentials", "true"), ("Vary", "Origin")]
    }
}
