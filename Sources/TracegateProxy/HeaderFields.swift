import NIOCore
import NIOHTTP1

/// The fields the data plane treats specially, recognised once while a head is parsed.
enum FieldKind: UInt8 {
    case other, host, contentLength, transferEncoding, connection, upgrade, hopByHop, expect
    case forwardedFor, forwardedProto, forwardedHost, via, requestID

    /// RFC 9110 §7.6.1: describes one connection and is never forwarded.
    /// `Transfer-Encoding` is included because the proxy frames every body itself.
    var isHopByHop: Bool {
        switch self {
        case .transferEncoding, .connection, .upgrade, .hopByHop: return true
        default: return false
        }
    }
}

/// One header field of a head, as offsets into the head's bytes.
struct HeadField {
    var nameStart: Int
    var nameEnd: Int
    var valueStart: Int
    var valueEnd: Int
    var kind: FieldKind
}

/// The header fields of a parsed head, read straight from its bytes: nothing is copied into
/// strings unless asked for.
public struct HeaderFields: Sequence {
    let bytes: ByteBuffer
    let fields: [HeadField]

    public var count: Int { fields.count }

    /// The first value of the field called `name` (ASCII case-insensitive), or nil.
    public func first(name: String) -> String? {
        guard let index = firstIndex(name: name) else { return nil }
        return value(at: index)
    }

    public func contains(name: String) -> Bool { firstIndex(name: name) != nil }

    public func makeIterator() -> AnyIterator<(name: String, value: String)> {
        var index = 0
        return AnyIterator {
            guard index < fields.count else { return nil }
            defer { index += 1 }
            return (name(at: index), value(at: index))
        }
    }

    func name(at index: Int) -> String { string(fields[index].nameStart, fields[index].nameEnd) }
    func value(at index: Int) -> String { string(fields[index].valueStart, fields[index].valueEnd) }

    func firstIndex(name: String) -> Int? {
        let wanted = name.utf8.count
        return bytes.withUnsafeReadableBytes { raw in
            for (index, field) in fields.enumerated() where field.nameEnd - field.nameStart == wanted {
                var position = field.nameStart
                var same = true
                for byte in name.utf8 {
                    if lowerASCII(raw[position]) != lowerASCII(byte) {
                        same = false
                        break
                    }
                    position += 1
                }
                if same { return index }
            }
            return nil
        }
    }

    private func string(_ start: Int, _ end: Int) -> String {
        bytes.getString(at: bytes.readerIndex + start, length: end - start) ?? ""
    }

    /// As NIO headers, for code off the hot path.
    public var httpHeaders: HTTPHeaders { HTTPHeaders(self.map { ($0.name, $0.value) }) }
}

/// Calls `body` with each comma-separated item of `start..<end`, trimmed of spaces and tabs.
@inline(__always)
func forEachListItem(_ raw: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ body: (Int, Int) -> Void) {
    var itemStart = start
    while itemStart <= end {
        var itemEnd = itemStart
        while itemEnd < end, raw[itemEnd] != UInt8(ascii: ",") { itemEnd += 1 }
        var s = itemStart
        var e = itemEnd
        while s < e, raw[s] == 0x20 || raw[s] == 0x09 { s += 1 }
        while e > s, raw[e - 1] == 0x20 || raw[e - 1] == 0x09 { e -= 1 }
        if e > s || itemEnd < end || itemStart == start { body(s, e) }
        itemStart = itemEnd + 1
    }
}

/// ASCII case-insensitive comparison of `start..<end` with an already-lowercased literal.
@inline(__always)
func equalsLowercased(_ raw: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ literal: StaticString) -> Bool {
    guard end - start == literal.utf8CodeUnitCount else { return false }
    let bytes = literal.utf8Start
    for offset in 0..<(end - start) where lowerASCII(raw[start + offset]) != bytes[offset] { return false }
    return true
}

/// RFC 9110 §5.6.2 tchar.
@inline(__always)
func isTokenByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
        UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
        UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
        UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        return true
    default:
        return false
    }
}
