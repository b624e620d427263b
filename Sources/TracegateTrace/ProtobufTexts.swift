/// The texts a binary message carries when it is protobuf (Streamlit's `BackMsg`/`ForwardMsg`,
/// gRPC-style chat protocols): its wire format read without a schema, as `protoc --decode_raw`
/// does, and every length-delimited field that is text kept, in order. Pure; runs in the trace
/// builder.
///
/// A length-delimited field is text when it is valid UTF-8 with no control character other than
/// tab, line feed and carriage return. Such bytes are also read as a nested message when they hold
/// one of those three (the tags of fields 1 and 2 and most lengths are control bytes, letters
/// rarely read as a message to the end): a message with texts of its own wins. Anything else that
/// is no message is bytes, left out.
enum ProtobufTexts {
    /// Nested messages read at most this deep.
    static let maxDepth = 16
    /// Texts kept per message; the rest are still checked, not kept.
    static let maxTexts = 200

    /// Nil unless `bytes` read as one protobuf message with at least one field. `truncated`: the
    /// message was cut short (the capture cap), so a field cut at its end is no failure.
    static func texts(in bytes: ArraySlice<UInt8>, truncated: Bool = false) -> [String]? {
        var found: [String] = []
        guard read(bytes, depth: 0, truncated: truncated, into: &found) else { return nil }
        return found
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
            guard let tag = varint(bytes, &index) else { return endedEarly() }
            guard tag >> 3 >= 1, tag >> 3 <= 0x1FFF_FFFF else { return failed() }
            switch tag & 7 {
            case 0:
                guard varint(bytes, &index) != nil else { return endedEarly() }
            case 1, 5:
                let width = tag & 7 == 1 ? 8 : 4
                guard bytes.endIndex - index >= width else { return endedEarly() }
                index += width
            case 2:
                guard let length = varint(bytes, &index), length <= UInt64(Int.max) else { return endedEarly() }
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
        let text = text(field)
        // Text with no line break or tab is text; otherwise a nested message that has text of its own wins.
        if let text, !field.contains(where: { $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
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

    private static func text(_ bytes: ArraySlice<UInt8>) -> String? {
        guard !bytes.contains(where: { ($0 < 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D) || $0 == 0x7F }) else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func varint(_ bytes: ArraySlice<UInt8>, _ index: inout Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var at = index
        while at < bytes.endIndex && shift < 64 {
            let byte = bytes[at]
            at += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 {
                index = at
                return value
            }
            shift += 7
        }
        return nil
    }
}
