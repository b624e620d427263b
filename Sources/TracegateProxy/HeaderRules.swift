import NIOHTTP1

/// How a message body is delimited on the wire.
enum BodyFraming: Equatable {
    /// The message has no body (a HEAD response, 204, 304, a GET without framing headers…).
    case none
    case contentLength
    case chunked
    /// A response body that ends when the upstream closes the connection.
    case untilClose
}

/// RFC 9110 §7.6.1: fields that describe one connection and must not be forwarded.
/// `Transfer-Encoding` is in the list because the proxy re-frames every body itself.
enum HopByHop {
    /// True when `name` is a hop-by-hop field; `isConnection` tells whether it is `Connection`
    /// (whose value names further fields to drop).
    @inline(__always)
    static func classify(_ name: String) -> (hopByHop: Bool, isConnection: Bool) {
        switch name.utf8.count {
        case 2: return (name.equalsLowercased("te"), false)
        case 7: return (name.equalsLowercased("upgrade"), false)
        case 10:
            if name.equalsLowercased("connection") { return (true, true) }
            return (name.equalsLowercased("keep-alive"), false)
        case 16: return (name.equalsLowercased("proxy-connection"), false)
        case 17: return (name.equalsLowercased("transfer-encoding"), false)
        case 18: return (name.equalsLowercased("proxy-authenticate"), false)
        case 19: return (name.equalsLowercased("proxy-authorization"), false)
        default: return (false, false)
        }
    }

    /// The field names listed in `Connection` (empty, without allocating, when there is none).
    static func namedInConnection(_ headers: HTTPHeaders) -> [Substring] {
        var named: [Substring] = []
        for (name, value) in headers where name.utf8.count == 10 && name.equalsLowercased("connection") {
            for token in value.split(separator: ",") {
                let trimmed = token.trimmingASCIISpaces()
                if !trimmed.isEmpty { named.append(trimmed) }
            }
        }
        return named
    }

    /// Removes every hop-by-hop field and every field named in `Connection`.
    /// Does not copy or allocate when there is nothing to remove (the common case).
    static func strip(_ headers: inout HTTPHeaders) {
        var found = false
        var named: [Substring] = []
        for (name, value) in headers {
            let kind = classify(name)
            guard kind.hopByHop else { continue }
            found = true
            if kind.isConnection {
                for token in value.split(separator: ",") {
                    let trimmed = token.trimmingASCIISpaces()
                    if !trimmed.isEmpty { named.append(trimmed) }
                }
            }
        }
        guard found else { return }
        var kept = HTTPHeaders()
        kept.reserveCapacity(headers.count)
        for (name, value) in headers where !classify(name).hopByHop {
            if !named.isEmpty, named.contains(where: { name.equalsIgnoringASCIICase($0) }) { continue }
            kept.add(name: name, value: value)
        }
        headers = kept
    }
}

extension HTTPHeaders {
    /// True when a `Transfer-Encoding` field is present (its final coding is then `chunked`, or the parser refused it).
    var hasTransferEncoding: Bool { self.contains(name: "transfer-encoding") }

    /// The distinct values of `Content-Length`, or nil when they disagree (a smuggling shape).
    var contentLengthValues: (count: Int, consistent: Bool) {
        var first: String?
        var count = 0
        for (name, value) in self where name.utf8.count == 14 && name.equalsLowercased("content-length") {
            count += 1
            for part in value.split(separator: ",") {
                let v = String(part.trimmingASCIISpaces())
                if let f = first, f != v { return (count, false) }
                first = v
            }
        }
        return (count, true)
    }
}

extension String {
    /// ASCII case-insensitive comparison against an already-lowercased ASCII literal.
    @inline(__always)
    func equalsLowercased(_ lowercased: StaticString) -> Bool {
        let count = lowercased.utf8CodeUnitCount
        guard self.utf8.count == count else { return false }
        return lowercased.withUTF8Buffer { other in
            var i = 0
            for byte in self.utf8 {
                if lowerASCII(byte) != other[i] { return false }
                i += 1
            }
            return true
        }
    }
}

extension StringProtocol {
    @inline(__always)
    func equalsIgnoringASCIICase<S: StringProtocol>(_ other: S) -> Bool {
        guard self.utf8.count == other.utf8.count else { return false }
        return zip(self.utf8, other.utf8).allSatisfy { lowerASCII($0) == lowerASCII($1) }
    }
}

@inline(__always)
func lowerASCII(_ byte: UInt8) -> UInt8 {
    (byte >= 0x41 && byte <= 0x5A) ? byte | 0x20 : byte
}

extension Substring {
    func trimmingASCIISpaces() -> Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
        return s
    }
}
