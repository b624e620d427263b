/// A listening or connecting address: a host name, IPv4 or IPv6 address, and a port.
///
/// `host` never carries brackets; `description` adds them for IPv6 (`[::1]:8080`).
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    /// Host name, IPv4 address or IPv6 address (without brackets).
    public var host: String
    /// Port, 0–65535 (0 lets the OS pick one).
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, with brackets around an IPv6 host.
    public var description: String {
        "\(HostSyntax.bracketed(host)):\(port)"
    }

    /// Parses `host:port`, `1.2.3.4:port` or `[ipv6]:port`; nil when malformed.
    public static func parse(_ text: String) -> HostPort? {
        try? validated(text)
    }

    /// Parses `host:port`, saying why when it is refused.
    static func validated(_ text: String) throws(ValueRejection) -> HostPort {
        let (host, portText) = try HostSyntax.splitAuthority(Substring(text))
        guard let portText else { throw ValueRejection("the port is missing") }
        return HostPort(host: host, port: try HostSyntax.port(portText))
    }

    /// Stand-in used before the settings table's defaults are applied.
    static let placeholder = HostPort(host: "", port: 0)
}

/// Syntax checks for the host and port parts shared by `HostPort` and `UpstreamURL`.
enum HostSyntax {
    /// Splits `host[:port]` or `[ipv6][:port]` and validates the host; the port text is not checked.
    static func splitAuthority(_ text: Substring) throws(ValueRejection) -> (host: String, port: Substring?) {
        let host: Substring
        let port: Substring?
        if text.first == "[" {
            guard let close = text.firstIndex(of: "]") else {
                throw ValueRejection("missing ']' after the IPv6 address")
            }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if rest.isEmpty {
                port = nil
            } else if rest.first == ":" {
                port = rest.dropFirst()
            } else {
                throw ValueRejection("unexpected text after ']'")
            }
            guard isIPv6(host) else { throw ValueRejection("'\(host)' is not an IPv6 address") }
        } else {
            if let colon = text.lastIndex(of: ":") {
                host = text[..<colon]
                port = text[text.index(after: colon)...]
            } else {
                host = text
                port = nil
            }
            if host.contains(":") {
                throw ValueRejection("an IPv6 address must be in brackets, e.g. [::1]:8080")
            }
            guard !host.isEmpty else { throw ValueRejection("the host is missing") }
            guard isHostNameOrIPv4(host) else { throw ValueRejection("'\(host)' is not a valid host") }
        }
        return (String(host), port)
    }

    /// A decimal port 0–65535.
    static func port(_ text: Substring) throws(ValueRejection) -> Int {
        guard !text.isEmpty else { throw ValueRejection("the port is missing") }
        guard text.count <= 5, text.allSatisfy(\.isASCIIDigit), let value = Int(text), value <= 65535 else {
            throw ValueRejection("port '\(text)' is not a number from 0 to 65535")
        }
        return value
    }

    /// The host as written in a URL authority: brackets around IPv6.
    static func bracketed(_ host: String) -> String {
        host.contains(":") ? "[\(host)]" : host
    }

    /// A DNS name (letters, digits, '-', '_', dot-separated labels) or a dotted-quad IPv4 address.
    static func isHostNameOrIPv4(_ host: Substring) -> Bool {
        if host.allSatisfy({ $0.isASCIIDigit || $0 == "." }) {
            return isIPv4(host)
        }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            (1...63).contains(label.count)
                && label.first != "-" && label.last != "-"
                && label.allSatisfy { $0.isASCIILetter || $0.isASCIIDigit || $0 == "-" || $0 == "_" }
        }
    }

    /// Four decimal octets 0–255.
    static func isIPv4(_ text: Substring) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { part in
            (1...3).contains(part.count) && part.allSatisfy(\.isASCIIDigit) && (Int(part) ?? 256) <= 255
        }
    }

    /// An IPv6 address in any RFC 4291 text form, optionally with a `%zone` suffix.
    static func isIPv6(_ text: Substring) -> Bool {
        var address = text
        if let percent = text.firstIndex(of: "%") {
            let zone = text[text.index(after: percent)...]
            guard !zone.isEmpty,
                  zone.allSatisfy({ $0.isASCIILetter || $0.isASCIIDigit || "-_.".contains($0) })
            else { return false }
            address = text[..<percent]
        }
        let halves = address.split(separator: "::", omittingEmptySubsequences: false)
        guard halves.count <= 2 else { return false }
        let groups = halves.map { $0.isEmpty ? [] : $0.split(separator: ":", omittingEmptySubsequences: false) }
        let all = groups.flatMap { $0 }
        var count = 0
        for (index, group) in all.enumerated() {
            if index == all.count - 1, group.contains(".") {
                guard isIPv4(group) else { return false }
                count += 2
            } else {
                guard (1...4).contains(group.count), group.allSatisfy(\.isASCIIHexDigit) else { return false }
                count += 1
            }
        }
        return halves.count == 2 ? count <= 7 : count == 8
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
    var isASCIILetter: Bool { isASCII && isLetter }
    var isASCIIHexDigit: Bool { isASCII && isHexDigit }
}
