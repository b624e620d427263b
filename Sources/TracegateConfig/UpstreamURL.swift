/// The backend every request is forwarded to: `http(s)://host[:port][/base-path]`.
public struct UpstreamURL: Sendable, Hashable, CustomStringConvertible {
    /// The only two schemes tracegate speaks to an upstream.
    public enum Scheme: String, Sendable, CaseIterable {
        case http, https

        /// 80 for http, 443 for https.
        public var defaultPort: Int { self == .http ? 80 : 443 }
    }

    public var scheme: Scheme
    /// Host name, IPv4 or IPv6 address (without brackets).
    public var host: String
    /// Port; the scheme's default when the URL has none.
    public var port: Int
    /// Path prepended to every request path, without a trailing slash; "" when none.
    public var basePath: String

    public init(scheme: Scheme, host: String, port: Int, basePath: String) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.basePath = basePath
    }

    public var usesTLS: Bool { scheme == .https }

    /// `host[:port]` as sent in a Host header: IPv6 bracketed, the scheme's default port omitted.
    public var authority: String {
        let host = HostSyntax.bracketed(host)
        return port == scheme.defaultPort ? host : "\(host):\(port)"
    }

    /// `scheme://authority/base-path`.
    public var description: String {
        "\(scheme.rawValue)://\(authority)\(basePath)"
    }

    /// Parses an upstream URL; nil when malformed or not acceptable
    /// (other schemes, user info, query, fragment, missing host).
    public static func parse(_ text: String) -> UpstreamURL? {
        try? validated(text)
    }

    /// Parses an upstream URL, saying why when it is refused.
    static func validated(_ text: String) throws(ValueRejection) -> UpstreamURL {
        guard let separator = text.firstRange(of: "://") else {
            throw ValueRejection("it is not an absolute URL")
        }
        guard let scheme = Scheme(rawValue: text[..<separator.lowerBound].lowercased()) else {
            throw ValueRejection("the scheme must be http or https")
        }
        let rest = text[separator.upperBound...]
        guard !rest.contains("?"), !rest.contains("#") else {
            throw ValueRejection("a query or fragment is not allowed")
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        guard !authority.contains("@") else {
            throw ValueRejection("user info (user:password@) is not allowed")
        }
        guard !authority.isEmpty else { throw ValueRejection("the host is missing") }
        let (host, portText) = try HostSyntax.splitAuthority(authority)
        let port = try portText.map { (text) throws(ValueRejection) in try HostSyntax.port(text) } ?? scheme.defaultPort

        var path = rest[slash...]
        guard path.allSatisfy(isPathCharacter) else {
            throw ValueRejection("the base path contains characters that must be percent-encoded")
        }
        guard percentEscapesAreValid(path) else {
            throw ValueRejection("the base path contains a malformed %-escape")
        }
        while path.last == "/" { path = path.dropLast() }
        return UpstreamURL(scheme: scheme, host: host, port: port, basePath: String(path))
    }

    /// RFC 3986 `pchar` plus `/`, with `%` allowed (escapes checked separately).
    private static func isPathCharacter(_ c: Character) -> Bool {
        c.isASCIILetter || c.isASCIIDigit || "-._~!$&'()*+,;=:@/%".contains(c)
    }

    private static func percentEscapesAreValid(_ path: Substring) -> Bool {
        var index = path.startIndex
        while let percent = path[index...].firstIndex(of: "%") {
            let escape = path[path.index(after: percent)...].prefix(2)
            guard escape.count == 2, escape.allSatisfy(\.isASCIIHexDigit) else { return false }
            index = escape.endIndex
        }
        return true
    }

    /// Stand-in used before the required setting is applied.
    static let placeholder = UpstreamURL(scheme: .http, host: "", port: 0, basePath: "")
}
