/// Cheap forms of the few string operations trace building does on header-like values (media
/// types, encodings, model names): on UTF-8 bytes, ASCII rules only, without Foundation's or
/// `Character`'s Unicode machinery, which cost microseconds per call.
enum ASCIIText {
    /// `text` with ASCII upper-case letters lowered; other bytes unchanged.
    static func lowercased(_ text: some StringProtocol) -> String {
        guard text.utf8.contains(where: { (0x41...0x5A).contains($0) }) else { return String(text) }
        return String(decoding: text.utf8.map { (0x41...0x5A).contains($0) ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    /// `text` without leading and trailing spaces and tabs.
    static func trimmingBlanks(_ text: Substring) -> Substring {
        let utf8 = text.utf8
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = utf8.firstIndex(where: { !isBlank($0) }), let last = utf8.lastIndex(where: { !isBlank($0) }) else {
            return text[text.endIndex...]
        }
        return Substring(utf8[first...last])
    }

    /// The media type of a `Content-Type` value, parameters dropped, lower-cased: `text/event-stream`.
    static func mediaType(_ contentType: String) -> String {
        let type = contentType.utf8.firstIndex(of: UInt8(ascii: ";")).map { contentType[..<$0] } ?? contentType[...]
        return lowercased(trimmingBlanks(type))
    }

    /// Whether `text` holds `part`, byte for byte.
    static func contains(_ text: String, _ part: StaticString) -> Bool {
        let needle = UnsafeBufferPointer(start: part.utf8Start, count: part.utf8CodeUnitCount)
        guard let first = needle.first else { return true }
        let utf8 = text.utf8
        var index = utf8.startIndex
        while let found = utf8[index...].firstIndex(of: first) {
            if utf8[found...].starts(with: needle) { return true }
            index = utf8.index(after: found)
        }
        return false
    }

    /// Whether `text` ends with `suffix`, byte for byte.
    static func hasSuffix(_ text: Substring.UTF8View, _ suffix: StaticString) -> Bool {
        let tail = UnsafeBufferPointer(start: suffix.utf8Start, count: suffix.utf8CodeUnitCount)
        return text.count >= tail.count && text.suffix(tail.count).elementsEqual(tail)
    }
}
