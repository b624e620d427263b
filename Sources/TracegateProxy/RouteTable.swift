/// Chooses the upstream of a request: among the routes whose host (when they name one) matches the
/// request's `Host`, the one with the longest path prefix that the path starts with at a segment
/// boundary (`/v1/chat` takes `/v1/chat` and `/v1/chat/completions`, not `/v1/chatbot`); else the
/// default upstream. Pure.
public struct RouteTable: Sendable {
    public struct Rule: Sendable, Equatable {
        public var pathPrefix: String
        /// Host name to match, lowercase, without port; nil matches any host.
        public var host: String?

        public init(pathPrefix: String, host: String? = nil) {
            self.pathPrefix = pathPrefix
            self.host = host?.lowercased()
        }
    }

    /// Rule `i` selects `UpstreamRoute.configured(i)`.
    public let rules: [Rule]

    public init(_ rules: [Rule]) { self.rules = rules }

    public var isEmpty: Bool { rules.isEmpty }

    /// The route for a request target (`/path?query`) and `Host` header value (`name[:port]`).
    public func route(for requestTarget: Substring, host: Substring?) -> UpstreamRoute {
        let path = requestTarget.prefix { $0 != "?" }
        let hostName = host.map(Self.hostName)
        var best = UpstreamRoute.defaultUpstream
        var bestLength = -1
        for (index, rule) in rules.enumerated() {
            if let wanted = rule.host, wanted != hostName { continue }
            guard rule.pathPrefix.count > bestLength, Self.path(path, startsWith: rule.pathPrefix) else { continue }
            best = .configured(index)
            bestLength = rule.pathPrefix.count
        }
        return best
    }

    /// Whether `path` is `prefix` or lies under it (at a segment boundary).
    public static func path(_ path: Substring, startsWith prefix: String) -> Bool {
        guard path.hasPrefix(prefix) else { return false }
        if prefix.hasSuffix("/") || path.count == prefix.count { return true }
        return path[path.index(path.startIndex, offsetBy: prefix.count)] == "/"
    }

    /// `Example.COM:8080` → `example.com`; `[::1]:80` → `[::1]`.
    static func hostName(_ host: Substring) -> String {
        let trimmed = host.trimmingPrefix(" ")
        if trimmed.hasPrefix("["), let close = trimmed.firstIndex(of: "]") {
            return String(trimmed[...close]).lowercased()
        }
        return String(trimmed.prefix { $0 != ":" && $0 != " " }).lowercased()
    }
}
