import Foundation

/// One place a trace's user or session can come from (`user_from`, `session_from`): written
/// `KIND:ARGUMENT`, tried in order, the first valid value wins.
public enum IdentitySource: Sendable, Hashable, CustomStringConvertible {
    /// `header:NAME`
    case header(String)
    /// `cookie:NAME`
    case cookie(String)
    /// `query:NAME`, percent-decoded.
    case query(String)
    /// `jwt:CLAIM` from `Authorization: Bearer …`, or `jwt:COOKIE/CLAIM` from a cookie. The payload is
    /// decoded without verifying the signature: as trustworthy as a header.
    case jwt(claim: String, cookie: String?)
    /// `body:PATH`, a dotted path into the JSON request body (`user`, `metadata.user_id`).
    case body([String])
    /// `baggage:KEY` of the W3C `baggage` header.
    case baggage(String)
    /// `chain:previous_response_id` (sessions only): a Responses API call that continues an earlier
    /// response joins that response's session.
    case responseChain

    /// What `user_from` / `session_from` accept, for error messages.
    public static let accepted =
        "a comma-separated list of sources tried in order: header:NAME, cookie:NAME, query:NAME, jwt:CLAIM, jwt:COOKIE/CLAIM, body:PATH, baggage:KEY, and for sessions chain:previous_response_id"

    public var description: String {
        switch self {
        case .header(let name): return "header:\(name)"
        case .cookie(let name): return "cookie:\(name)"
        case .query(let name): return "query:\(name)"
        case .jwt(let claim, let cookie): return "jwt:" + (cookie.map { "\($0)/" } ?? "") + claim
        case .body(let path): return "body:" + path.joined(separator: ".")
        case .baggage(let key): return "baggage:\(key)"
        case .responseChain: return "chain:previous_response_id"
        }
    }

    /// Whether the value is read from the request head (on the event loop, as the request arrives)
    /// rather than from the body or the response when the trace is built.
    public var readsHead: Bool {
        switch self {
        case .header, .cookie, .query, .jwt, .baggage: return true
        case .body, .responseChain: return false
        }
    }

    /// Parses a list such as `jwt:sub, header:X-User-ID, body:user`; the error says which entry is wrong and why.
    public static func parseList(_ text: String, forSessions: Bool) throws(IdentitySourceError) -> [IdentitySource] {
        let entries = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if entries.isEmpty { return [] }
        var sources: [IdentitySource] = []
        for entry in entries {
            let source = try parse(entry, forSessions: forSessions)
            if sources.contains(source) { throw IdentitySourceError("'\(entry)' is listed twice") }
            sources.append(source)
        }
        return sources
    }

    static func parse(_ entry: String, forSessions: Bool) throws(IdentitySourceError) -> IdentitySource {
        guard let colon = entry.firstIndex(of: ":") else { throw IdentitySourceError("'\(entry)' has no KIND: prefix") }
        let kind = entry[..<colon].lowercased()
        let argument = String(entry[entry.index(after: colon)...])
        func token(_ text: String, _ what: String) throws(IdentitySourceError) -> String {
            guard !text.isEmpty, text.utf8.allSatisfy(isTokenByte) else {
                throw IdentitySourceError("'\(entry)': \(what) must be a non-empty name of letters, digits and !#$%&'*+-.^_`|~")
            }
            return text
        }
        switch kind {
        case "header": return .header(try token(argument, "the header name"))
        case "cookie": return .cookie(try token(argument, "the cookie name"))
        case "query": return .query(try token(argument, "the parameter name"))
        case "baggage": return .baggage(try token(argument, "the baggage key"))
        case "jwt":
            // `COOKIE/CLAIM` only when what precedes the first `/` is a cookie name, so namespaced
            // claims such as `https://example.com/user_id` stay whole.
            if let slash = argument.firstIndex(of: "/"), argument[..<slash].utf8.allSatisfy(isTokenByte), slash != argument.startIndex {
                let claim = String(argument[argument.index(after: slash)...])
                guard !claim.isEmpty else { throw IdentitySourceError("'\(entry)' names no claim after the cookie") }
                return .jwt(claim: claim, cookie: String(argument[..<slash]))
            }
            guard !argument.isEmpty else { throw IdentitySourceError("'\(entry)' names no claim") }
            return .jwt(claim: argument, cookie: nil)
        case "body":
            let path = argument.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard !argument.isEmpty, !path.contains(where: \.isEmpty) else {
                throw IdentitySourceError("'\(entry)': expected a dotted JSON path such as metadata.user_id")
            }
            return .body(path)
        case "chain":
            guard argument == "previous_response_id" else {
                throw IdentitySourceError("'\(entry)': the only chain is chain:previous_response_id")
            }
            guard forSessions else { throw IdentitySourceError("'\(entry)' gives sessions only") }
            return .responseChain
        default:
            throw IdentitySourceError("'\(kind)' is not a kind of source")
        }
    }

    /// RFC 9110 `tchar`.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }
    }
}

public struct IdentitySourceError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
