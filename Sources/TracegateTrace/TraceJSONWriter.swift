/// Appends JSON text to a byte buffer. Strings are escaped completely (quote, backslash and
/// every C0 control), so any Swift `String` yields valid JSON; non-ASCII text is written as
/// UTF-8, which MLflow stores as is.
struct TraceJSONWriter {
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
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0x00..<0x20:
                bytes += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                          Self.hex[Int(byte >> 4)], Self.hex[Int(byte & 0xF)]]
            default:
                // UTF-8 continuation and lead bytes are ≥ 0x80, so multi-byte scalars pass whole.
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// A 64-bit integer as a JSON string, as protobuf JSON writes int64/uint64.
    mutating func quotedInteger(_ value: some BinaryInteger) {
        bytes.append(UInt8(ascii: "\""))
        bytes += String(value).utf8
        bytes.append(UInt8(ascii: "\""))
    }

    /// An integer as a JSON number.
    mutating func integer(_ value: some BinaryInteger) {
        bytes += String(value).utf8
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
