/// The length and character limits MLflow 3.17.2 puts on trace fields, and helpers that keep
/// values inside them.
///
/// Lengths count Unicode scalars, the way Python's `len` and the SQL `VARCHAR` columns do (a
/// Swift `Character` such as a flag emoji can be several). Shortening cuts between whole
/// characters, so it never splits an emoji or a letter from its accent.
public enum MLflowLimits {
    /// `session.id` / `mlflow.trace.session`: a longer one makes MLflow reject the whole OTLP batch.
    public static let sessionID = 250
    /// `client_request_id`: the database column size.
    public static let clientRequestID = 50
    public static let tagKey = 250
    public static let tagValue = 8000
    public static let metadataKey = 250
    public static let metadataValue = 8000
    /// MLflow 3.17.2 stores longer metadata values but returns only their first 250 characters.
    public static let returnedMetadataValue = 250
    /// `mlflow.traceName`: a longer one is an error, not a truncation.
    public static let traceName = 4096
    /// `request_preview` / `response_preview`: the database column size.
    public static let preview = 1000

    /// The only `mlflow.*` tag a client may set.
    public static let traceNameTag = "mlflow.traceName"

    /// Length as MLflow counts it (Unicode scalars).
    public static func length(_ text: String) -> Int {
        // In valid UTF-8 (every Swift string) each scalar has exactly one byte that is not a continuation byte.
        let counted = text.utf8.withContiguousStorageIfAvailable { bytes in
            bytes.reduce(0) { $0 &+ ($1 & 0xC0 != 0x80 ? 1 : 0) }
        }
        return counted ?? text.unicodeScalars.count
    }

    /// The longest prefix of whole characters that is at most `limit` scalars long.
    public static func truncated(_ text: String, to limit: Int) -> String {
        if text.utf8.count <= limit { return text }  // a scalar is at least one UTF-8 byte
        var scalars = 0
        var end = text.startIndex
        for index in text.indices {
            let count = text[index].unicodeScalars.count
            if scalars + count > limit { break }
            scalars += count
            end = text.index(after: index)
        }
        return String(text[..<end])
    }

    /// `text` if it fits `limit`; otherwise a stable stand-in of exactly at most `limit` scalars:
    /// a prefix, `~` and 16 hex digits of a 64-bit FNV-1a hash of the whole value, so distinct
    /// long values stay distinct and equal ones stay equal.
    public static func shortened(_ text: String, to limit: Int) -> String {
        guard text.utf8.count > limit, length(text) > limit else { return text }  // a scalar is at least one UTF-8 byte
        let suffix = "~" + TraceHex.format(fnv1a64(text))
        return truncated(text, to: max(0, limit - suffix.unicodeScalars.count)) + suffix
    }

    /// Whether MLflow accepts `key` as a trace tag key: 1–250 scalars of letters, digits, `_`,
    /// `/`, `.`, `-`, space and `:`, and unchanged by POSIX path normalisation (no leading `/`,
    /// no `..` prefix, no `//`, `./` or trailing `/`). On OTLP an invalid key is skipped; on
    /// StartTraceV3 it would be stored, so both encoders leave such keys out.
    public static func isValidTagKey(_ key: String) -> Bool {
        guard !key.isEmpty, length(key) <= tagKey else { return false }
        for scalar in key.unicodeScalars where !isTagKeyScalar(scalar) { return false }
        if key.hasPrefix("/") || key.hasPrefix("..") || key.hasSuffix("/") || key == "." {
            return false
        }
        for component in key.split(separator: "/", omittingEmptySubsequences: false)
        where component.isEmpty || component == "." || component == ".." {
            return false
        }
        return true
    }

    /// Whether `key` can be a trace metadata key: 1–250 scalars, no control characters.
    public static func isValidMetadataKey(_ key: String) -> Bool {
        !key.isEmpty && length(key) <= metadataKey && !containsControlCharacter(key)
    }

    /// A tag value cut to 8000 scalars (MLflow would truncate it the same way on OTLP).
    public static func tagValue(_ value: String) -> String {
        truncated(value, to: tagValue)
    }

    /// A metadata value cut to 8000 scalars (the database column size).
    public static func metadataValue(_ value: String) -> String {
        truncated(value, to: metadataValue)
    }

    /// The tags both encoders send, sorted by key: keys MLflow accepts, no `mlflow.*` key except
    /// `mlflow.traceName` (capped at 4096; client-set reserved tags can break a trace), values
    /// capped at 8000. Without a `mlflow.traceName` tag, `defaultTraceName` is used: the OTLP
    /// ingest names no trace by itself (the Python SDK sends the root span name).
    public static func exportableTags(
        _ tags: [String: String], defaultTraceName: String? = nil
    ) -> [(key: String, value: String)] {
        var result: [(key: String, value: String)] = []
        if tags[traceNameTag] == nil, let name = defaultTraceName {
            result.append((traceNameTag, truncated(name, to: traceName)))
        }
        for (key, value) in tags {
            if key == traceNameTag {
                result.append((key, truncated(value, to: traceName)))
            } else if !key.hasPrefix("mlflow."), isValidTagKey(key) {
                result.append((key, tagValue(value)))
            }
        }
        return result.sorted { $0.key < $1.key }
    }

    /// C0 (U+0000–U+001F), DEL (U+007F) or C1 (U+0080–U+009F).
    public static func isControlCharacter(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    /// Whether any scalar of `text` is a control character (C0, DEL, C1).
    public static func containsControlCharacter(_ text: String) -> Bool {
        // On the bytes: C0 and DEL are single bytes, C1 is 0xC2 followed by 0x80–0x9F.
        let found = text.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            var previous: UInt8 = 0
            for byte in bytes {
                if byte < 0x20 || byte == 0x7F || (previous == 0xC2 && byte <= 0x9F) { return true }
                previous = byte
            }
            return false
        }
        return found ?? text.unicodeScalars.contains(where: isControlCharacter)
    }

    /// Python's `\w` (letters, digits, `_`) plus `/ . - : ` and space.
    private static func isTagKeyScalar(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "_", "/", ".", "-", ":", " ": return true
        default: break
        }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .decimalNumber, .letterNumber, .otherNumber:
            return true
        default:
            return false
        }
    }

    /// 64-bit FNV-1a over the UTF-8 bytes: stable across runs and platforms, unlike `hashValue`.
    static func fnv1a64(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }
}
