/// Appends JSON text to a byte buffer. Strings are escaped completely (quote, backslash, every C0
/// control and DEL), so any Swift `String` yields valid JSON; non-ASCII text is written as UTF-8,
/// which MLflow stores as is. The one JSON string escaper above the data plane (which writes its
/// own few strings into NIO buffers, `ByteBuffer.writeJSONString`, without depending on this layer).
public struct TraceJSONWriter {
    /// What has been written; `TraceRecordJSON.appendLine` lends it a caller's buffer.
    var bytes: [UInt8] = []
    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    init(reservingCapacity capacity: Int = 1024) {
        bytes.reserveCapacity(capacity)
    }

    /// Raw JSON punctuation or an already valid fragment.
    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    /// A JSON string literal.
    mutating func string(_ text: some StringProtocol) {
        Self.appendString(text, to: &bytes)
    }

    /// `text` as a JSON string literal, appended to `bytes`.
    static func appendString(_ text: some StringProtocol, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        let done: Void? = text.utf8.withContiguousStorageIfAvailable { appendEscaped($0, to: &bytes) }
        if done == nil {
            var copy = String(text)
            copy.withUTF8 { appendEscaped($0, to: &bytes) }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// `text` as a JSON string literal (for the few JSON answers built as `String`s).
    public static func quoted(_ text: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count + 2)
        appendString(text, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `text` escaped, copied in runs: most strings need no escape at all and are copied whole.
    private static func appendEscaped(_ text: UnsafeBufferPointer<UInt8>, to bytes: inout [UInt8]) {
        var runStart = 0
        var index = 0
        while index < text.count {
            // Eight bytes at a time while none needs an escape (the usual case for whole strings).
            if text.count - index >= 8, !Self.needsEscape(UnsafeRawPointer(text.baseAddress! + index).loadUnaligned(as: UInt64.self)) {
                index += 8
                continue
            }
            let byte = text[index]
            index += 1
            // UTF-8 continuation and lead bytes are ≥ 0x80, so multi-byte scalars pass whole.
            guard byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: text[runStart..<(index - 1)]))
            runStart = index
            bytes.append(UInt8(ascii: "\\"))
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes.append(byte)
            case 0x0A: bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(UInt8(ascii: "t"))
            default:
                bytes.append(UInt8(ascii: "u"))
                bytes.append(UInt8(ascii: "0"))
                bytes.append(UInt8(ascii: "0"))
                bytes.append(Self.hex[Int(byte >> 4)])
                bytes.append(Self.hex[Int(byte & 0xF)])
            }
        }
        bytes.append(contentsOf: UnsafeBufferPointer(rebasing: text[runStart...]))
    }

    /// Whether any of the eight bytes in `word` is a C0 control, DEL, `"` or `\\` (the classic
    /// "has a byte less than n" and "has a zero byte" bit tricks; exact, no false answers).
    @inline(__always)
    static func needsEscape(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        func hasZeroByte(_ x: UInt64) -> Bool { (x &- ones) & ~x & highs != 0 }
        let control = (word &- ones &* 0x20) & ~word & highs != 0
        return control || hasZeroByte(word ^ (ones &* 0x22)) || hasZeroByte(word ^ (ones &* 0x5C))
            || hasZeroByte(word ^ (ones &* 0x7F))
    }

    /// A 64-bit integer as a JSON string, as protobuf JSON writes int64/uint64.
    mutating func quotedInteger(_ value: some BinaryInteger) {
        bytes.append(UInt8(ascii: "\""))
        integer(value)
        bytes.append(UInt8(ascii: "\""))
    }

    /// An integer as a JSON number (digits written directly: `String(value)` goes through the generic
    /// radix conversion).
    mutating func integer(_ value: some BinaryInteger) {
        if value < 0 {
            guard let magnitude = UInt64(exactly: value.magnitude) else { return bytes += String(value).utf8 }
            bytes.append(UInt8(ascii: "-"))
            digits(magnitude)
        } else if let magnitude = UInt64(exactly: value) {
            digits(magnitude)
        } else {
            bytes += String(value).utf8
        }
    }

    private mutating func digits(_ value: UInt64) {
        var reversed: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 20 digits at most, one per byte
        var count = 0
        var rest = value
        withUnsafeMutableBytes(of: &reversed) { scratch in
            repeat {
                scratch[count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            } while rest > 0
            for index in stride(from: count - 1, through: 0, by: -1) { bytes.append(scratch[index]) }
        }
    }

    /// A JSON number; non-finite values become the protobuf-JSON strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
    mutating func double(_ value: Double) {
        if let name = AttributeValue.nonFiniteName(value) {
            string(name)
        } else {
            // Swift's shortest round-trip form ("1.0", "1e-05", "5e+20") is valid JSON.
            bytes += value.description.utf8
        }
    }

    mutating func bool(_ value: Bool) {
        if value { raw("true") } else { raw("false") }
    }

    /// `"key":` — the caller writes the value and any separating comma.
    mutating func key(_ name: StaticString) {
        bytes.append(UInt8(ascii: "\""))
        raw(name)
        raw("\":")
    }

    /// Writes `items` separated by commas.
    mutating func list<Item>(_ items: some Sequence<Item>, _ write: (inout TraceJSONWriter, Item) -> Void) {
        var first = true
        for item in items {
            if !first { bytes.append(UInt8(ascii: ",")) }
            first = false
            write(&self, item)
        }
    }
}
