/// The texts a binary message carries when it is protobuf (Streamlit's `BackMsg`/`ForwardMsg`):
/// its wire format read without a schema, as `protoc --decode_raw` does, and every
/// length-delimited field that is text kept, in order. Pure; runs in the trace builder.
///
/// A length-delimited field is text when it is valid UTF-8 with no control character other than
/// tab, line feed and carriage return. Such bytes are also read as a nested message when they hold
/// one of those three (the tags of fields 1 and 2 and most lengths are control bytes, letters
/// rarely read as a message to the end): a message with texts of its own wins. Anything else that
/// is no message is bytes, left out, and so are texts that are opaque ids (UUIDs, hex hashes).
enum ProtobufTexts {
    /// Nested messages read at most this deep.
    static let maxDepth = 16
    /// Texts kept per message (opaque ids included); the rest are still checked, not kept.
    static let maxTexts = 200

    /// Nil unless `bytes` read as one protobuf message with at least one field. `truncated`: the
    /// message was cut short (the capture cap), so a field cut at its end is no failure.
    static func texts(in bytes: ArraySlice<UInt8>, truncated: Bool = false) -> [String]? {
        var found: [String] = []
        guard read(bytes, depth: 0, truncated: truncated, into: &found) else { return nil }
        return found.filter { !isIdentifier($0.utf8) }
    }

    private static func read(_ bytes: ArraySlice<UInt8>, depth: Int, truncated: Bool, into found: inout [String]) -> Bool {
        let foundBefore = found.count
        var index = bytes.startIndex
        var fields = 0
        func failed() -> Bool {
            found.removeSubrange(foundBefore...)
            return false
        }
        /// The bytes end inside a field: the end of a message cut short, or no message.
        func endedEarly() -> Bool { truncated && fields > 0 ? true : failed() }
        while index < bytes.endIndex {
            let tag: UInt64
            switch varint(bytes, &index) {
            case .value(let value): tag = value
            case .cut: return endedEarly()
            case .malformed: return failed()
            }
            guard tag >> 3 >= 1, tag >> 3 <= 0x1FFF_FFFF else { return failed() }
            switch tag & 7 {
            case 0:
                switch varint(bytes, &index) {
                case .value: break
                case .cut: return endedEarly()
                case .malformed: return failed()
                }
            case 1, 5:
                let width = tag & 7 == 1 ? 8 : 4
                guard bytes.endIndex - index >= width else { return endedEarly() }
                index += width
            case 2:
                let length: UInt64
                switch varint(bytes, &index) {
                case .value(let value) where value <= UInt64(Int.max): length = value
                case .cut: return endedEarly()
                case .value, .malformed: return failed()
                }
                let cut = bytes.endIndex - index < Int(length)
                guard !cut || truncated else { return failed() }
                let end = cut ? bytes.endIndex : index + Int(length)
                readField(bytes[index..<end], depth: depth, truncated: cut, into: &found)
                index = end
            default:
                return failed()  // groups (3, 4) are long deprecated; 6 and 7 do not exist
            }
            fields += 1
        }
        return fields > 0
    }

    private static func readField(_ field: ArraySlice<UInt8>, depth: Int, truncated: Bool, into found: inout [String]) {
        guard !field.isEmpty else { return }
        let text = text(field, cut: truncated)
        // Text with no line break or tab is text; otherwise a nested message that has text of its
        // own wins — unless the field was cut, where any text would read as a message cut short.
        if let text, truncated || !field.contains(where: { $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            keep(text, in: &found)
            return
        }
        let foundBefore = found.count
        if depth < maxDepth && read(field, depth: depth + 1, truncated: truncated, into: &found) {
            guard let text, found.count == foundBefore else { return }
            keep(text, in: &found)
        } else if let text {
            keep(text, in: &found)
        }
    }

    private static func keep(_ text: String, in found: inout [String]) {
        if found.count < maxTexts { found.append(text) }
    }

    /// A UUID, a hash, or a word built around one (Streamlit's `$$ID-<32 hex>-None`): opaque ids a
    /// message carries beside its texts, left out so that the texts read. Only a word of letters,
    /// digits, `$`, `_` and `-` with a UUID or a run of 32 hex digits (a letter among them) in it,
    /// and little else, is one: a URL, a sentence or a long number is text.
    static func isIdentifier(_ text: String.UTF8View) -> Bool {
        guard text.count >= 32, text.count <= 64 else { return false }
        var run = 0
        var longest = 0
        var runHasLetter = false
        var longestHasLetter = false
        var hexDigits = 0
        var dashes = 0
        for byte in text {
            let isDigit = byte >= 0x30 && byte <= 0x39
            let isHexLetter = byte | 0x20 >= 0x61 && byte | 0x20 <= 0x66
            let isWordByte = isDigit || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A) || byte == UInt8(ascii: "$") || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: "-")
            guard isWordByte else { return false }
            if isDigit || isHexLetter {
                hexDigits += 1
                run += 1
                runHasLetter = runHasLetter || isHexLetter
            } else {
                (run, runHasLetter) = (0, false)
            }
            if run > longest || (run == longest && runHasLetter) { (longest, longestHasLetter) = (run, runHasLetter) }
            if byte == UInt8(ascii: "-") { dashes += 1 }
        }
        let isUUID = text.count == 36 && hexDigits == 32 && dashes == 4
        return isUUID || (longest >= 32 && longestHasLetter && text.count - longest <= 16)
    }

    /// `cut`: the bytes may end inside a character, which is left out.
    private static func text(_ bytes: ArraySlice<UInt8>, cut: Bool) -> String? {
        guard !bytes.contains(where: { ($0 < 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D) || $0 == 0x7F }) else { return nil }
        if let text = String(validating: bytes, as: UTF8.self) { return text }
        guard cut else { return nil }
        // A character's first byte is 0b11xxxxxx; its continuation bytes 0b10xxxxxx.
        guard let lead = bytes.suffix(4).lastIndex(where: { $0 & 0xC0 != 0x80 }), bytes[lead] & 0xC0 == 0xC0 else { return nil }
        return String(validating: bytes[..<lead], as: UTF8.self)
    }

    enum Varint {
        case value(UInt64)
        /// The bytes ended inside it.
        case cut
        /// More than 10 bytes: no varint.
        case malformed
    }

    private static func varint(_ bytes: ArraySlice<UInt8>, _ index: inout Int) -> Varint {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var at = index
        while at < bytes.endIndex {
            guard shift < 70 else { return .malformed }
            let byte = bytes[at]
            at += 1
            value |= UInt64(byte & 0x7F) << min(shift, 63)
            if byte & 0x80 == 0 {
                index = at
                return .value(value)
            }
            shift += 7
        }
        return .cut
    }
}
