import Foundation

/// Reads an identity source's raw value from a request head, on the event loop: string scanning
/// only. A JWT is reduced to its payload segment here, so the token itself (a credential) is
/// never kept; the claim is decoded later, when the trace is built.
public enum IdentityHeadReader {
    /// The raw value `source` finds, or nil. `header` looks a request header up by name.
    public static func read(_ source: IdentitySource, header: (String) -> String?, target: String) -> String? {
        switch source {
        case .header(let name):
            return header(name)
        case .cookie(let name):
            return header("cookie").flatMap { cookie(name, in: $0) }
        case .query(let name):
            return queryParameter(name, in: target)
        case .baggage(let key):
            return header("baggage").flatMap { baggageValue(key, in: $0) }
        case .jwt(_, let cookieName):
            let token: Substring?
            if let cookieName {
                token = header("cookie").flatMap { cookie(cookieName, in: $0) }.map { Substring($0) }
            } else if let authorization = header("authorization"), authorization.count > 7,
                authorization.prefix(7).lowercased() == "bearer "
            {
                token = authorization.dropFirst(7).drop(while: { $0 == " " })
            } else {
                token = nil
            }
            return token.flatMap(jwtPayloadSegment)
        case .body, .responseChain:
            return nil
        }
    }

    /// `a=1; b="2"` → the named cookie's value, without quotes.
    static func cookie(_ name: String, in header: String) -> String? {
        for pair in header.split(separator: ";") {
            let trimmed = pair.drop(while: { $0 == " " || $0 == "\t" })
            guard let equals = trimmed.firstIndex(of: "="), trimmed[..<equals] == name else { continue }
            var value = trimmed[trimmed.index(after: equals)...]
            while let last = value.last, last == " " || last == "\t" { value = value.dropLast() }
            if value.count >= 2, value.first == "\"", value.last == "\"" { value = value.dropFirst().dropLast() }
            return String(value)
        }
        return nil
    }

    /// The named parameter of the target's query, percent-decoded (`+` is a space).
    static func queryParameter(_ name: String, in target: String) -> String? {
        guard let question = target.firstIndex(of: "?") else { return nil }
        for pair in target[target.index(after: question)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard percentDecoded(parts[0]) == name else { continue }
            return parts.count > 1 ? percentDecoded(parts[1], plusIsSpace: true) : ""
        }
        return nil
    }

    /// W3C Baggage: `k1=v1;property,k2=v2` → the named member's value, percent-decoded.
    static func baggageValue(_ key: String, in header: String) -> String? {
        for member in header.split(separator: ",") {
            let entry = member.split(separator: ";", maxSplits: 1).first ?? ""
            guard let equals = entry.firstIndex(of: "=") else { continue }
            guard entry[..<equals].trimmingCharacters(in: .whitespaces) == key else { continue }
            return percentDecoded(Substring(entry[entry.index(after: equals)...].trimmingCharacters(in: .whitespaces)))
        }
        return nil
    }

    /// `header.payload.signature` → `payload`, when the token has that shape.
    static func jwtPayloadSegment(_ token: Substring) -> String? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[1].isEmpty else { return nil }
        return String(parts[1])
    }

    static func percentDecoded(_ text: Substring, plusIsSpace: Bool = false) -> String? {
        let spaced = plusIsSpace ? text.replacingOccurrences(of: "+", with: " ") : String(text)
        return spaced.removingPercentEncoding
    }
}
