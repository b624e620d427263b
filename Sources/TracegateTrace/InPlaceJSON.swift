#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A JSON text checked once, exactly as `PayloadJSON.parse` would accept it, then read where it lies:
/// members and elements are walked by offset, and only the values asked for are decoded.
///
/// For payloads read many times a second, such as the chunks of a streamed chat response, where
/// building each chunk's whole tree cost more than everything else in the trace. It reads `bytes`
/// where they lie: valid only while they are.
struct InPlaceJSON {
    let bytes: UnsafeBufferPointer<UInt8>
    /// Offset of the top-level value.
    let root: Int
    /// Where a string, object or array starts: the offset just past it (other entries are unset).
    private let valueEnds: [Int32]

    /// nil unless `bytes` is a complete JSON text (surrounding whitespace allowed) of less than 2 GiB.
    init?(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard bytes.count < Int(Int32.max) else { return nil }
        var ends = [Int32](repeating: 0, count: bytes.count)
        let root = ends.withUnsafeMutableBufferPointer { ends in
            var parser = PayloadJSONParser(bytes: bytes, allowTruncation: false)
            return parser.checkDocument(valueEnds: ends)
        }
        guard let root else { return nil }
        valueEnds = ends
        self.bytes = bytes
        self.root = root
    }

    func isObject(at offset: Int) -> Bool { bytes[offset] == UInt8(ascii: "{") }
    func isArray(at offset: Int) -> Bool { bytes[offset] == UInt8(ascii: "[") }
    func isNull(at offset: Int) -> Bool { bytes[offset] == UInt8(ascii: "n") }

    /// The value at `offset`, decoded.
    func value(at offset: Int) -> PayloadJSON {
        var parser = PayloadJSONParser(bytes: bytes, allowTruncation: false)
        return parser.parseValue(at: offset)
    }

    /// The integer at `offset`, as `PayloadJSON.int` reads it; nil for any other value.
    func int(at offset: Int) -> Int? {
        guard bytes[offset] == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[offset]) else { return nil }
        // Most are a few plain digits: read where they lie, without a lexeme string.
        var number = 0
        var at = offset
        while at < bytes.count, at - offset < 18, bytes[at] >= UInt8(ascii: "0"), bytes[at] <= UInt8(ascii: "9") {
            number = number * 10 + Int(bytes[at] - UInt8(ascii: "0"))
            at += 1
        }
        if at > offset, at == end(ofValueAt: offset) { return number }
        return value(at: offset).int
    }

    /// The string at `offset`, decoded; nil for any other value.
    func string(at offset: Int) -> String? {
        guard bytes[offset] == UInt8(ascii: "\"") else { return nil }
        return value(at: offset).string
    }

    /// The members of the object at `offset`, in document order (none if it is not an object).
    func members(at offset: Int) -> Members { Members(json: self, position: isObject(at: offset) ? offset + 1 : nil) }

    /// The offsets of the elements of the array at `offset` (none if it is not an array).
    func elements(at offset: Int) -> Elements { Elements(json: self, position: isArray(at: offset) ? offset + 1 : nil) }

    struct Member {
        /// The key's bytes between its quotes, escapes as written.
        let rawKey: UnsafeBufferPointer<UInt8>
        /// Offset of the key's opening quote.
        let keyOffset: Int
        let valueOffset: Int
        private let keyHasEscapes: Bool

        init(rawKey: UnsafeBufferPointer<UInt8>, keyOffset: Int, valueOffset: Int) {
            (self.rawKey, self.keyOffset, self.valueOffset) = (rawKey, keyOffset, valueOffset)
            keyHasEscapes = rawKey.contains(UInt8(ascii: "\\"))
        }

        /// Whether the key, decoded, is `name` (which, like every name read, is plain ASCII).
        func isNamed(_ name: StaticString, in json: InPlaceJSON) -> Bool {
            let plain = UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
            if !keyHasEscapes {
                return rawKey.count == plain.count && memcmp(rawKey.baseAddress!, plain.baseAddress!, plain.count) == 0
            }
            return json.string(at: keyOffset)?.utf8.elementsEqual(plain) ?? false
        }
    }

    struct Members: Sequence, IteratorProtocol {
        let json: InPlaceJSON
        var position: Int?

        mutating func next() -> Member? {
            guard var at = position else { return nil }
            let bytes = json.bytes
            at = json.skipWhitespace(from: at)
            guard bytes[at] == UInt8(ascii: "\"") else {  // `}`: the end
                position = nil
                return nil
            }
            let keyEnd = json.end(ofValueAt: at)
            let member = Member(rawKey: UnsafeBufferPointer(rebasing: bytes[(at + 1)..<(keyEnd - 1)]), keyOffset: at,
                                valueOffset: json.skipWhitespace(from: json.skipWhitespace(from: keyEnd) + 1))  // past the `:`
            at = json.skipWhitespace(from: json.end(ofValueAt: member.valueOffset))
            position = bytes[at] == UInt8(ascii: ",") ? at + 1 : nil
            return member
        }
    }

    struct Elements: Sequence, IteratorProtocol {
        let json: InPlaceJSON
        var position: Int?

        mutating func next() -> Int? {
            guard var at = position else { return nil }
            at = json.skipWhitespace(from: at)
            guard json.bytes[at] != UInt8(ascii: "]") else {
                position = nil
                return nil
            }
            let element = at
            at = json.skipWhitespace(from: json.end(ofValueAt: element))
            position = json.bytes[at] == UInt8(ascii: ",") ? at + 1 : nil
            return element
        }
    }

    private func skipWhitespace(from offset: Int) -> Int {
        var at = offset
        while at < bytes.count {
            switch bytes[at] {
            case 0x20, 0x09, 0x0A, 0x0D: at += 1
            default: return at
            }
        }
        return at
    }

    /// The offset just past the value at `offset`.
    private func end(ofValueAt offset: Int) -> Int {
        switch bytes[offset] {
        case UInt8(ascii: "\""), UInt8(ascii: "{"), UInt8(ascii: "["):
            return Int(valueEnds[offset])
        default:
            var at = offset
            while at < bytes.count {
                switch bytes[at] {
                case UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 0x20, 0x09, 0x0A, 0x0D: return at
                default: at += 1
                }
            }
            return at
        }
    }
}
