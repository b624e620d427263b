/// A JSON value as read from (or written into) a chat payload.
///
/// Objects keep their members in document order, so a response re-serialized by tracegate reads like
/// the original; numbers keep their original lexeme (no precision lost on large integers).
/// `Sendable`, unlike `JSONSerialization`'s `Any` trees, so assembled state can live in `Sendable` values.
enum PayloadJSON: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number's lexeme as it appeared (or as written by `int(_:)`).
    case number(String)
    case string(String)
    case array([PayloadJSON])
    case object([(String, PayloadJSON)])

    static func int(_ value: Int) -> PayloadJSON { .number(String(value)) }

    static func == (lhs: PayloadJSON, rhs: PayloadJSON) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.number(a), .number(b)): return a == b || (Double(a) != nil && Double(a) == Double(b))
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            // Member order does not matter for equality; duplicate keys resolve to the last one.
            let left = Dictionary(a, uniquingKeysWith: { _, last in last })
            let right = Dictionary(b, uniquingKeysWith: { _, last in last })
            return left == right
        default: return false
        }
    }

    // MARK: Access

    subscript(key: String) -> PayloadJSON? {
        guard case let .object(members) = self else { return nil }
        return members.last(where: { $0.0 == key })?.1
    }

    subscript(index: Int) -> PayloadJSON? {
        guard case let .array(items) = self, items.indices.contains(index) else { return nil }
        return items[index]
    }

    var string: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    var int: Int? {
        guard case let .number(lexeme) = self else { return nil }
        if let value = Int(lexeme) { return value }
        if let value = Double(lexeme), value.isFinite, value.rounded() == value, abs(value) < 9.0e15 { return Int(value) }
        return nil
    }

    var bool: Bool? {
        if case let .bool(b) = self { return b }
        return nil
    }

    var array: [PayloadJSON]? {
        if case let .array(items) = self { return items }
        return nil
    }

    var members: [(String, PayloadJSON)]? {
        if case let .object(members) = self { return members }
        return nil
    }

    var isObject: Bool {
        if case .object = self { return true }
        return false
    }

    var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// `self` with `key` set (replacing an existing member in place, else appended). No-op on non-objects.
    func setting(_ key: String, _ value: PayloadJSON) -> PayloadJSON {
        guard case var .object(members) = self else { return self }
        if let index = members.lastIndex(where: { $0.0 == key }) {
            members[index].1 = value
        } else {
            members.append((key, value))
        }
        return .object(members)
    }

    /// Builds an object from members, leaving out those whose value is nil.
    static func object(dropping members: [(String, PayloadJSON?)]) -> PayloadJSON {
        .object(members.compactMap { key, value in value.map { (key, $0) } })
    }

    // MARK: Parsing

    /// Parses a complete JSON text; nil if it is not valid JSON (surrounding whitespace allowed).
    static func parse<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> PayloadJSON? {
        parse(bytes, allowTruncation: false)?.value
    }

    /// Parses a JSON text that may have been cut off: with `allowTruncation`, an unexpected end of input
    /// closes every open string, array and object, dropping a trailing incomplete number, literal or
    /// key; `truncated` says whether that happened. Invalid JSON (other than a premature end) is nil.
    static func parse<Bytes: Collection<UInt8>>(_ bytes: Bytes, allowTruncation: Bool) -> (value: PayloadJSON, truncated: Bool)? {
        if let result = bytes.withContiguousStorageIfAvailable({ buffer in
            parseBuffer(buffer, allowTruncation: allowTruncation)
        }) {
            return result
        }
        let copy = Array(bytes)
        return copy.withUnsafeBufferPointer { parseBuffer($0, allowTruncation: allowTruncation) }
    }

    static func parse(_ text: String) -> PayloadJSON? {
        parse(Array(text.utf8))
    }

    private static func parseBuffer(_ buffer: UnsafeBufferPointer<UInt8>, allowTruncation: Bool) -> (value: PayloadJSON, truncated: Bool)? {
        var parser = PayloadJSONParser(bytes: buffer, allowTruncation: allowTruncation)
        guard let value = parser.parseDocument() else { return nil }
        return (value, parser.hitEnd)
    }

    // MARK: Serializing

    /// Compact JSON text: members in order, `/` and non-ASCII characters not escaped.
    var serialized: String {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    func write(into out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case let .bool(b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case let .number(lexeme): out.append(contentsOf: lexeme.utf8)
        case let .string(s): PayloadJSON.writeString(s, into: &out)
        case let .array(items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                item.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case let .object(members):
            out.append(UInt8(ascii: "{"))
            for (i, (key, value)) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                PayloadJSON.writeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                value.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func writeString(_ s: String, into out: inout [UInt8]) {
        TraceJSONWriter.appendString(s, to: &out)
    }
}

/// Recursive-descent JSON parser over bytes, depth-limited so hostile nesting cannot exhaust the stack.
struct PayloadJSONParser {
    static let maxDepth = 256

    let bytes: UnsafeBufferPointer<UInt8>
    let allowTruncation: Bool
    var position = 0
    /// Input ended inside a value (only ever true with `allowTruncation`).
    private(set) var hitEnd = false
    /// Where `checkDocument` notes the end of each string and container, by its start.
    private var valueEnds = UnsafeMutableBufferPointer<Int32>(start: nil, count: 0)

    init(bytes: UnsafeBufferPointer<UInt8>, allowTruncation: Bool) {
        self.bytes = bytes
        self.allowTruncation = allowTruncation
    }

    private struct Invalid: Error {}

    mutating func parseDocument() -> PayloadJSON? {
        do {
            skipToDocument()
            guard let value = try parseValue(depth: 0) else { return nil }
            if hitEnd { return value }
            skipWhitespace()
            return position == bytes.count ? value : nil
        } catch {
            return nil
        }
    }

    /// Skips leading whitespace and a UTF-8 byte order mark (tolerated at the start).
    private mutating func skipToDocument() {
        skipWhitespace()
        if bytes.count - position >= 3, bytes[position] == 0xEF, bytes[position + 1] == 0xBB, bytes[position + 2] == 0xBF {
            position += 3
            skipWhitespace()
        }
    }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    /// Signals the end of input inside a value: an error unless truncation is allowed.
    private mutating func reachedEnd() throws {
        guard allowTruncation else { throw Invalid() }
        hitEnd = true
    }

    /// nil only when the input ended before the value could be completed (truncation allowed).
    private mutating func parseValue(depth: Int) throws -> PayloadJSON? {
        skipWhitespace()
        guard position < bytes.count else {
            try reachedEnd()
            return nil
        }
        switch bytes[position] {
        case UInt8(ascii: "{"):
            guard depth < Self.maxDepth else { throw Invalid() }
            return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["):
            guard depth < Self.maxDepth else { throw Invalid() }
            return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""):
            return try parseString()
        case UInt8(ascii: "t"): return try parseLiteral("true", .bool(true))
        case UInt8(ascii: "f"): return try parseLiteral("false", .bool(false))
        case UInt8(ascii: "n"): return try parseLiteral("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try parseNumber()
        default:
            throw Invalid()
        }
    }

    private mutating func parseLiteral(_ word: String, _ value: PayloadJSON) throws -> PayloadJSON? {
        for expected in word.utf8 {
            guard position < bytes.count else {
                try reachedEnd()
                return nil
            }
            guard bytes[position] == expected else { throw Invalid() }
            position += 1
        }
        return value
    }

    private mutating func parseNumber() throws -> PayloadJSON? {
        guard let lexeme = try scanNumber() else { return nil }
        return .number(String(decoding: UnsafeBufferPointer(rebasing: bytes[lexeme]), as: UTF8.self))
    }

    /// The number's lexeme; nil when it ran into the end of input (truncation allowed: dropped).
    private mutating func scanNumber() throws -> Range<Int>? {
        let start = position
        var complete = true
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        let digitsStart = position
        let digits = skipDigits()
        if digits == 0 { complete = false }
        // JSON allows no leading zero ("01"); written back out, such a lexeme would not be JSON.
        if digits > 1, bytes[digitsStart] == UInt8(ascii: "0") { throw Invalid() }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            if skipDigits() == 0 { complete = false }
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                position += 1
            }
            if skipDigits() == 0 { complete = false }
        }
        if position == bytes.count, allowTruncation {
            // A number running into the end of input may have lost digits: drop it.
            hitEnd = true
            return nil
        }
        guard complete else { throw Invalid() }
        return start..<position
    }

    private mutating func skipDigits() -> Int {
        var count = 0
        while position < bytes.count, bytes[position] >= UInt8(ascii: "0"), bytes[position] <= UInt8(ascii: "9") {
            position += 1
            count += 1
        }
        return count
    }

    /// A string value; with truncation allowed, a string cut off is returned with what was complete.
    private mutating func parseString() throws -> PayloadJSON? {
        position += 1 // opening quote
        // Most strings hold no escape: made straight from the input, without a buffer of their own.
        var scan = position
        while scan < bytes.count, bytes[scan] != UInt8(ascii: "\""), bytes[scan] != UInt8(ascii: "\\") { scan += 1 }
        if scan < bytes.count, bytes[scan] == UInt8(ascii: "\"") {
            defer { position = scan + 1 }
            return .string(String(decoding: UnsafeBufferPointer(rebasing: bytes[position..<scan]), as: UTF8.self))
        }
        var out: [UInt8] = []
        var runStart = position
        position = scan
        while true {
            guard position < bytes.count else {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
                try reachedEnd()
                return .string(Self.decodeDroppingIncompleteTail(out))
            }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
                position += 1
                return .string(String(decoding: out, as: UTF8.self))
            }
            if byte != UInt8(ascii: "\\") {
                position += 1
                continue
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
            position += 1
            guard position < bytes.count else {
                try reachedEnd()
                return .string(Self.decodeDroppingIncompleteTail(out))
            }
            let escaped = bytes[position]
            position += 1
            switch escaped {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "/"): out.append(UInt8(ascii: "/"))
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard let unit = try readHex4() else {
                    return .string(Self.decodeDroppingIncompleteTail(out))
                }
                var scalar: Unicode.Scalar?
                if (0xD800...0xDBFF).contains(unit) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    if bytes.count - position >= 2, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") {
                        let save = position
                        position += 2
                        guard let low = try readHex4() else {
                            return .string(Self.decodeDroppingIncompleteTail(out))
                        }
                        if (0xDC00...0xDFFF).contains(low) {
                            scalar = Unicode.Scalar(0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00))
                        } else {
                            position = save
                        }
                    } else if bytes.count - position < 2, allowTruncation {
                        // Cut between the two halves of a pair.
                        hitEnd = true
                        return .string(Self.decodeDroppingIncompleteTail(out))
                    }
                } else if !(0xDC00...0xDFFF).contains(unit) {
                    scalar = Unicode.Scalar(unit)
                }
                out.append(contentsOf: String(scalar ?? "\u{FFFD}").utf8)
            default:
                throw Invalid()
            }
            runStart = position
        }
    }

    /// Four hex digits; nil if the input ended first (truncation allowed).
    private mutating func readHex4() throws -> UInt16? {
        var value: UInt16 = 0
        for _ in 0..<4 {
            guard position < bytes.count else {
                try reachedEnd()
                return nil
            }
            let byte = bytes[position]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw Invalid()
            }
            value = value << 4 | UInt16(digit)
            position += 1
        }
        return value
    }

    /// Decodes UTF-8, first removing a multi-byte sequence cut off at the end.
    static func decodeDroppingIncompleteTail(_ bytes: [UInt8]) -> String {
        var end = bytes.count
        var back = 0
        while end > 0, back < 3, bytes[end - 1] & 0xC0 == 0x80 {
            end -= 1
            back += 1
        }
        if end > 0 {
            let lead = bytes[end - 1]
            let needed = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
            if needed > 1, needed > back + 1 {
                return String(decoding: bytes[..<(end - 1)], as: UTF8.self)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private mutating func parseArray(depth: Int) throws -> PayloadJSON? {
        position += 1
        var items: [PayloadJSON] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
            position += 1
            return .array(items)
        }
        items.reserveCapacity(4)  // one allocation for short arrays instead of three
        while true {
            let item = try parseValue(depth: depth)
            if let item { items.append(item) }
            if hitEnd { return .array(items) }
            skipWhitespace()
            guard position < bytes.count else {
                try reachedEnd()
                return .array(items)
            }
            switch bytes[position] {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"):
                position += 1
                return .array(items)
            default: throw Invalid()
            }
        }
    }

    private mutating func parseObject(depth: Int) throws -> PayloadJSON? {
        position += 1
        var members: [(String, PayloadJSON)] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
            position += 1
            return .object(members)
        }
        members.reserveCapacity(8)  // one allocation for most objects instead of four
        while true {
            skipWhitespace()
            guard position < bytes.count else {
                try reachedEnd()
                return .object(members)
            }
            guard bytes[position] == UInt8(ascii: "\"") else { throw Invalid() }
            guard case let .string(key)? = try parseString(), !hitEnd else {
                return .object(members) // cut inside a key: drop it
            }
            skipWhitespace()
            guard position < bytes.count else {
                try reachedEnd()
                return .object(members)
            }
            guard bytes[position] == UInt8(ascii: ":") else { throw Invalid() }
            position += 1
            let value = try parseValue(depth: depth)
            if let value { members.append((key, value)) }
            if hitEnd { return .object(members) }
            skipWhitespace()
            guard position < bytes.count else {
                try reachedEnd()
                return .object(members)
            }
            switch bytes[position] {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"):
                position += 1
                return .object(members)
            default: throw Invalid()
            }
        }
    }

    // MARK: Checking without building (`InPlaceJSON`)

    /// Whether the input is a JSON text `parseDocument` reads (truncation not allowed), checked
    /// without building any value; returns the offset of its top-level value. Where each string,
    /// object and array starts, `valueEnds` gets the offset just past it.
    mutating func checkDocument(valueEnds: UnsafeMutableBufferPointer<Int32>) -> Int? {
        precondition(valueEnds.count >= bytes.count)
        self.valueEnds = valueEnds
        precondition(!allowTruncation, "only complete texts are checked")
        do {
            skipToDocument()
            let root = position
            try checkValue(depth: 0)
            skipWhitespace()
            return position == bytes.count ? root : nil
        } catch {
            return nil
        }
    }

    /// The value at `offset` of a text `checkDocument` accepted.
    mutating func parseValue(at offset: Int) -> PayloadJSON {
        position = offset
        // Accepted as a whole, so nothing in it can fail or nest too deep.
        return (try? parseValue(depth: 0)) ?? .null
    }

    /// `parseValue`'s grammar and limits, building nothing.
    private mutating func checkValue(depth: Int) throws {
        skipWhitespace()
        guard position < bytes.count else { throw Invalid() }
        switch bytes[position] {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            guard depth < Self.maxDepth else { throw Invalid() }
            try checkContainer(depth: depth + 1)
        case UInt8(ascii: "\""):
            try checkString()
        case UInt8(ascii: "t"): _ = try parseLiteral("true", .bool(true))
        case UInt8(ascii: "f"): _ = try parseLiteral("false", .bool(false))
        case UInt8(ascii: "n"): _ = try parseLiteral("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            _ = try scanNumber()
        default:
            throw Invalid()
        }
    }

    /// An object or an array, as `parseObject` and `parseArray` read them.
    private mutating func checkContainer(depth: Int) throws {
        let start = position
        defer { valueEnds[start] = Int32(truncatingIfNeeded: position) }
        let isObject = bytes[position] == UInt8(ascii: "{")
        let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
        position += 1
        skipWhitespace()
        if position < bytes.count, bytes[position] == close {
            position += 1
            return
        }
        while true {
            if isObject {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw Invalid() }
                try checkString()
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw Invalid() }
                position += 1
            }
            try checkValue(depth: depth)
            skipWhitespace()
            guard position < bytes.count else { throw Invalid() }
            switch bytes[position] {
            case UInt8(ascii: ","): position += 1
            case close:
                position += 1
                return
            default: throw Invalid()
            }
        }
    }

    /// A string, as `parseString` reads it: any byte but an unescaped quote or backslash, and only
    /// JSON's escapes (a `\u` with four hex digits, paired or not).
    private mutating func checkString() throws {
        let start = position
        defer { valueEnds[start] = Int32(truncatingIfNeeded: position) }
        position += 1
        while position < bytes.count {
            switch bytes[position] {
            case UInt8(ascii: "\""):
                position += 1
                return
            case UInt8(ascii: "\\"):
                position += 1
                guard position < bytes.count else { throw Invalid() }
                let escaped = bytes[position]
                position += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    break
                case UInt8(ascii: "u"):
                    _ = try readHex4()
                default:
                    throw Invalid()
                }
            default:
                position += 1
            }
        }
        throw Invalid()
    }
}
