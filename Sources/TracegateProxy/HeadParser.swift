import NIOCore
import NIOHTTP1

/// Why a head could not be parsed.
enum HeadError: Error, Equatable {
    case tooLarge
    case malformed(String)
    /// A well-formed version whose major number is not 1 (`HTTP/2.0` sent as HTTP/1 text): 505.
    case versionNotSupported
}

/// The protocol version of a request or status line.
enum ParsedVersion: Equatable {
    /// `HTTP/1.0`, or `HTTP/1.1` for any minor version from 1 up (RFC 9112 §2.3: a recipient treats a
    /// higher minor version as the highest it implements).
    case supported(HTTPVersion)
    case unsupportedMajor
    case invalid
}

/// Finds and parses HTTP/1 heads in a byte stream (RFC 9112 §2–5), without copying.
///
/// Strict where laxness enables request smuggling: no obsolete line folding, no whitespace before
/// the colon, no control characters in values, no bare CR, and no lone LF as a line ending (RFC 9112 §2.2
/// allows accepting one; llhttp, and so most Node and Swift servers behind the proxy, refuse it).
struct HeadParser {
    /// The request id field's name, lowercased.
    let requestIDName: [UInt8]
    let maxHeadBytes: Int
    /// How far the current head has been searched for its end, so a head arriving in pieces is scanned once.
    private var scanned = 0
    private var lastLineStart = 0

    init(requestIDHeader: String, maxHeadBytes: Int) {
        self.requestIDName = Array(requestIDHeader.lowercased().utf8)
        self.maxHeadBytes = maxHeadBytes
    }

    /// Length of the complete head at the start of `buffer` (including its blank line), nil when more bytes are needed.
    /// Leading empty lines (RFC 9112 §2.2) are consumed from `buffer`.
    mutating func headLength(in buffer: inout ByteBuffer) throws -> Int? {
        if scanned == 0 {
            var skipped = 0
            buffer.withUnsafeReadableBytes { raw in
                while skipped < raw.count, raw[skipped] == 0x0D || raw[skipped] == 0x0A { skipped += 1 }
            }
            buffer.moveReaderIndex(forwardBy: skipped)
        }
        let found: Int? = buffer.withUnsafeReadableBytes { raw in
            var position = scanned
            while position < raw.count {
                if raw[position] == 0x0A {
                    let lineLength = position - lastLineStart
                    if lineLength == 0 || (lineLength == 1 && raw[lastLineStart] == 0x0D) { return position + 1 }
                    lastLineStart = position + 1
                }
                position += 1
            }
            scanned = position
            return nil
        }
        if let found {
            scanned = 0
            lastLineStart = 0
            if found > maxHeadBytes { throw HeadError.tooLarge }
            return found
        }
        if buffer.readableBytes > maxHeadBytes { throw HeadError.tooLarge }
        return nil
    }

    /// Parses a complete request head (as found by `headLength`).
    func parseRequest(_ head: ByteBuffer) throws -> RequestHead {
        try head.withUnsafeReadableBytes { raw in
            var lines = LineCursor(raw: raw)
            guard let line = try lines.next() else { throw HeadError.malformed("empty request") }
            // method SP request-target SP HTTP-version
            var position = line.lowerBound
            while position < line.upperBound, isTokenByte(raw[position]) { position += 1 }
            let methodEnd = position
            guard methodEnd > line.lowerBound, methodEnd < line.upperBound, raw[methodEnd] == 0x20 else {
                throw HeadError.malformed("invalid request line")
            }
            let targetStart = methodEnd + 1
            position = targetStart
            while position < line.upperBound, raw[position] > 0x20, raw[position] != 0x7F { position += 1 }
            let targetEnd = position
            guard targetEnd > targetStart, targetEnd < line.upperBound, raw[targetEnd] == 0x20 else {
                throw HeadError.malformed("invalid request target")
            }
            let version: HTTPVersion
            switch Self.version(raw, targetEnd + 1, line.upperBound) {
            case .supported(let supported): version = supported
            case .unsupportedMajor: throw HeadError.versionNotSupported
            case .invalid: throw HeadError.malformed("invalid HTTP version")
            }
            let method = Self.method(raw, line.lowerBound, methodEnd)
            var facts = HeadFacts()
            let fields = try parseFields(&lines, raw: raw, facts: &facts, isRequest: true)
            return RequestHead(
                method: method, version: version, headers: HeaderFields(bytes: head, fields: fields),
                targetRange: targetStart..<targetEnd, facts: facts)
        }
    }

    /// Parses a complete response head.
    func parseResponse(_ head: ByteBuffer) throws -> ResponseHead {
        try head.withUnsafeReadableBytes { raw in
            var lines = LineCursor(raw: raw)
            guard let line = try lines.next() else { throw HeadError.malformed("empty response") }
            // HTTP-version SP 3DIGIT [SP reason-phrase]
            let start = line.lowerBound
            guard line.count >= 12, case .supported(let version) = Self.version(raw, start, start + 8),
                raw[start + 8] == 0x20
            else {
                throw HeadError.malformed("invalid status line")
            }
            var code = 0
            for offset in 9..<12 {
                let digit = raw[start + offset]
                guard digit >= 0x30 && digit <= 0x39 else { throw HeadError.malformed("invalid status code") }
                code = code * 10 + Int(digit - 0x30)
            }
            guard line.count == 12 || raw[start + 12] == 0x20, code >= 100 else {
                throw HeadError.malformed("invalid status line")
            }
            let reasonStart = min(start + 13, line.upperBound)
            let reason = head.getString(at: head.readerIndex + reasonStart, length: line.upperBound - reasonStart) ?? ""
            var facts = HeadFacts()
            let fields = try parseFields(&lines, raw: raw, facts: &facts, isRequest: false)
            return ResponseHead(
                version: version, status: HTTPResponseStatus(statusCode: code, reasonPhrase: reason),
                headers: HeaderFields(bytes: head, fields: fields), statusRange: (start + 8)..<line.upperBound,
                facts: facts)
        }
    }

    private func parseFields(
        _ lines: inout LineCursor, raw: UnsafeRawBufferPointer, facts: inout HeadFacts, isRequest: Bool
    ) throws -> [HeadField] {
        var fields: [HeadField] = []
        fields.reserveCapacity(16)
        while let line = try lines.next() {
            if line.isEmpty { return fields }
            let first = raw[line.lowerBound]
            if first == 0x20 || first == 0x09 { throw HeadError.malformed("obsolete line folding in header") }
            var position = line.lowerBound
            while position < line.upperBound, isTokenByte(raw[position]) { position += 1 }
            let nameEnd = position
            guard nameEnd > line.lowerBound, nameEnd < line.upperBound, raw[nameEnd] == UInt8(ascii: ":") else {
                throw HeadError.malformed("invalid header field name")
            }
            var valueStart = nameEnd + 1
            while valueStart < line.upperBound, raw[valueStart] == 0x20 || raw[valueStart] == 0x09 { valueStart += 1 }
            var valueEnd = line.upperBound
            while valueEnd > valueStart, raw[valueEnd - 1] == 0x20 || raw[valueEnd - 1] == 0x09 { valueEnd -= 1 }
            for index in valueStart..<valueEnd {
                let byte = raw[index]
                if (byte < 0x20 && byte != 0x09) || byte == 0x7F {
                    throw HeadError.malformed("invalid character in header value")
                }
            }
            let kind = classify(raw, line.lowerBound, nameEnd, isRequest: isRequest)
            try note(kind, raw, valueStart, valueEnd, fieldIndex: fields.count, facts: &facts)
            fields.append(HeadField(nameStart: line.lowerBound, nameEnd: nameEnd, valueStart: valueStart, valueEnd: valueEnd, kind: kind))
        }
        throw HeadError.malformed("incomplete head")
    }

    /// Records what a special field says about framing and the connection.
    private func note(
        _ kind: FieldKind, _ raw: UnsafeRawBufferPointer, _ start: Int, _ end: Int, fieldIndex: Int, facts: inout HeadFacts
    ) throws {
        switch kind {
        case .host:
            facts.hostCount += 1
        case .contentLength:
            facts.contentLengthCount += 1
            forEachListItem(raw, start, end) { itemStart, itemEnd in
                facts.contentLengthValues += 1
                var value = 0
                guard itemEnd > itemStart, itemEnd - itemStart <= 18 else {
                    facts.contentLengthInvalid = true
                    return
                }
                for index in itemStart..<itemEnd {
                    let digit = raw[index]
                    guard digit >= 0x30 && digit <= 0x39 else {
                        facts.contentLengthInvalid = true
                        return
                    }
                    value = value * 10 + Int(digit - 0x30)
                }
                if let previous = facts.contentLength, previous != value { facts.contentLengthConflict = true }
                facts.contentLength = value
            }
        case .transferEncoding:
            let firstField = !facts.hasTransferEncoding
            facts.hasTransferEncoding = true
            var codings = 0
            var lastIsChunked = false
            forEachListItem(raw, start, end) { itemStart, itemEnd in
                codings += 1
                lastIsChunked = equalsLowercased(raw, itemStart, itemEnd, "chunked")
            }
            facts.transferEncodingChunked = lastIsChunked
            facts.transferEncodingOnlyChunked = firstField && codings == 1 && lastIsChunked
        case .connection:
            forEachListItem(raw, start, end) { itemStart, itemEnd in
                if equalsLowercased(raw, itemStart, itemEnd, "close") {
                    facts.connectionClose = true
                } else if equalsLowercased(raw, itemStart, itemEnd, "keep-alive") {
                    facts.connectionKeepAlive = true
                } else if equalsLowercased(raw, itemStart, itemEnd, "upgrade") {
                    facts.connectionUpgrade = true
                } else if equalsLowercased(raw, itemStart, itemEnd, "content-length")
                    || equalsLowercased(raw, itemStart, itemEnd, "transfer-encoding")
                    || equalsLowercased(raw, itemStart, itemEnd, "host")
                {
                    return  // framing and routing are the proxy's to write: see `connectionNamed`
                } else if itemEnd > itemStart {
                    facts.connectionNamed.append(itemStart..<itemEnd)
                }
            }
        case .upgrade:
            var protocols = facts.hasUpgrade ? 2 : 0  // a second Upgrade field: more than one protocol
            var webSocket = false
            facts.hasUpgrade = true
            forEachListItem(raw, start, end) { itemStart, itemEnd in
                guard itemEnd > itemStart else { return }
                protocols += 1
                if equalsLowercased(raw, itemStart, itemEnd, "websocket") { webSocket = true }
                if !equalsLowercased(raw, itemStart, itemEnd, "h2c") { facts.upgradeOnlyH2C = false }
            }
            facts.upgradeOnlyWebSocket = webSocket && protocols == 1
        case .expect:
            forEachListItem(raw, start, end) { itemStart, itemEnd in
                if equalsLowercased(raw, itemStart, itemEnd, "100-continue") {
                    facts.expectsContinue = true
                } else if itemEnd > itemStart {
                    facts.expectsOther = true
                }
            }
        case .requestID:
            if facts.requestIDField == nil && end > start { facts.requestIDField = fieldIndex }
        default:
            break
        }
    }

    /// The field's kind, by length first, then by name.
    private func classify(_ raw: UnsafeRawBufferPointer, _ start: Int, _ end: Int, isRequest: Bool) -> FieldKind {
        let kind: FieldKind
        switch end - start {
        case 2: kind = equalsLowercased(raw, start, end, "te") ? .hopByHop : .other
        case 3: kind = isRequest && equalsLowercased(raw, start, end, "via") ? .via : .other
        case 4: kind = isRequest && equalsLowercased(raw, start, end, "host") ? .host : .other
        case 6: kind = isRequest && equalsLowercased(raw, start, end, "expect") ? .expect : .other
        case 7: kind = equalsLowercased(raw, start, end, "upgrade") ? .upgrade : .other
        case 10:
            if equalsLowercased(raw, start, end, "connection") {
                kind = .connection
            } else {
                kind = equalsLowercased(raw, start, end, "keep-alive") ? .hopByHop : .other
            }
        case 14:
            if equalsLowercased(raw, start, end, "content-length") {
                kind = .contentLength
            } else {
                // RFC 9113 §3.2.1: describes one h2c upgrade; never forwarded.
                kind = isRequest && equalsLowercased(raw, start, end, "http2-settings") ? .hopByHop : .other
            }
        case 15: kind = isRequest && equalsLowercased(raw, start, end, "x-forwarded-for") ? .forwardedFor : .other
        case 16:
            if equalsLowercased(raw, start, end, "proxy-connection") {
                kind = .hopByHop
            } else {
                kind = isRequest && equalsLowercased(raw, start, end, "x-forwarded-host") ? .forwardedHost : .other
            }
        case 17:
            if equalsLowercased(raw, start, end, "transfer-encoding") {
                kind = .transferEncoding
            } else {
                kind = isRequest && equalsLowercased(raw, start, end, "x-forwarded-proto") ? .forwardedProto : .other
            }
        case 18: kind = equalsLowercased(raw, start, end, "proxy-authenticate") ? .hopByHop : .other
        case 19: kind = equalsLowercased(raw, start, end, "proxy-authorization") ? .hopByHop : .other
        default: kind = .other
        }
        if kind == .other && end - start == requestIDName.count {
            var index = start
            for byte in requestIDName {
                if lowerASCII(raw[index]) != byte { return .other }
                index += 1
            }
            return .requestID
        }
        return kind
    }

    /// `HTTP/DIGIT.DIGIT` occupying exactly `start..<end` (RFC 9112 §2.3).
    private static func version(_ raw: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> ParsedVersion {
        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        guard end - start == 8, raw[start] == UInt8(ascii: "H"), raw[start + 1] == UInt8(ascii: "T"),
            raw[start + 2] == UInt8(ascii: "T"), raw[start + 3] == UInt8(ascii: "P"),
            raw[start + 4] == UInt8(ascii: "/"), isDigit(raw[start + 5]),
            raw[start + 6] == UInt8(ascii: "."), isDigit(raw[start + 7])
        else { return .invalid }
        guard raw[start + 5] == UInt8(ascii: "1") else {
            return raw[start + 5] == UInt8(ascii: "0") ? .invalid : .unsupportedMajor
        }
        return .supported(raw[start + 7] == UInt8(ascii: "0") ? .http1_0 : .http1_1)
    }

    /// The method, without allocating for the common ones.
    private static func method(_ raw: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> HTTPMethod {
        func exactly(_ literal: StaticString) -> Bool {
            guard end - start == literal.utf8CodeUnitCount else { return false }
            let bytes = literal.utf8Start
            for offset in 0..<(end - start) where raw[start + offset] != bytes[offset] { return false }
            return true
        }
        switch end - start {
        case 3:
            if exactly("GET") { return .GET }
            if exactly("PUT") { return .PUT }
        case 4:
            if exactly("POST") { return .POST }
            if exactly("HEAD") { return .HEAD }
        case 5:
            if exactly("PATCH") { return .PATCH }
            if exactly("TRACE") { return .TRACE }
        case 6: if exactly("DELETE") { return .DELETE }
        case 7:
            if exactly("OPTIONS") { return .OPTIONS }
            if exactly("CONNECT") { return .CONNECT }
        default: break
        }
        return HTTPMethod(rawValue: String(decoding: UnsafeRawBufferPointer(rebasing: raw[start..<end]), as: UTF8.self))
    }
}

/// Walks the lines of a complete head: each ends with CRLF; a bare CR or a lone LF is an error.
private struct LineCursor {
    let raw: UnsafeRawBufferPointer
    var position = 0

    /// The next line's content range (without its terminator), nil at the end of the bytes.
    mutating func next() throws -> Range<Int>? {
        guard position < raw.count else { return nil }
        let start = position
        var index = start
        while index < raw.count {
            let byte = raw[index]
            if byte == 0x0A { throw HeadError.malformed("bare LF in head") }
            if byte == 0x0D {
                guard index + 1 < raw.count, raw[index + 1] == 0x0A else { throw HeadError.malformed("bare CR in head") }
                position = index + 2
                return start..<index
            }
            index += 1
        }
        throw HeadError.malformed("unterminated line")
    }
}
