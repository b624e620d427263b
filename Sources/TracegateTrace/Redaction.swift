import Foundation

/// Removes secrets and personal data from what a trace holds, before it reaches MLflow, the spool
/// or the trace file: JSON fields by path, and text matching patterns (built-in or the user's).
/// Pure; runs on the trace builder, off the forwarding path.
/// (`@unchecked Sendable` for `NSRegularExpression`, immutable but not marked `Sendable` everywhere.)
public struct Redaction: @unchecked Sendable {
    public static let marker = "[REDACTED]"

    /// A dotted JSON path, split: `*` is any one key or index, `**` any number of levels.
    private let paths: [[Substring]]
    /// `NSRegularExpression` is immutable and safe to share; it is not marked `Sendable` on every platform.
    private let patterns: [NSRegularExpression]
    /// Per pattern, text it cannot match without (any one of these, compared ignoring ASCII case):
    /// most text holds none of them, and a scan for them costs a fraction of the regular expression.
    /// Nil: the pattern is run on everything.
    private let anchors: [ASCIIWords?]

    public var isEmpty: Bool { paths.isEmpty && patterns.isEmpty }

    /// API keys and tokens of common shapes: OpenAI/Anthropic `sk-…`, AWS access key ids, GitHub and
    /// Slack tokens, Google API keys, and the value of a `Bearer`/`Basic` credential.
    public static let apiKeyPattern =
        #"sk-[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}|(?i:bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"#
    public static let emailPattern = #"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"#

    /// What each built-in pattern's every match contains (lower case).
    static let builtinAnchors: [String: [String]] = [
        apiKeyPattern: ["sk-", "akia", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xoxa-", "xoxb-", "xoxp-", "xoxr-", "aiza", "bearer", "basic"],
        emailPattern: ["@"],
    ]

    /// - Parameters:
    ///   - jsonPaths: e.g. `user.email`, `messages.*.name`, `**.password` (already validated).
    ///   - patterns: regular expressions (already validated); invalid ones are ignored.
    public init(jsonPaths: [String] = [], patterns: [String] = []) {
        paths = jsonPaths.map { $0.split(separator: ".", omittingEmptySubsequences: false) }
        let compiled = patterns.compactMap { pattern in (try? NSRegularExpression(pattern: pattern)).map { (pattern, $0) } }
        self.patterns = compiled.map(\.1)
        anchors = compiled.map { pattern, _ in Self.builtinAnchors[pattern].map(ASCIIWords.init) }
    }

    /// A captured body as trace text: JSON fields on the paths are replaced, then every pattern match.
    public func body(_ text: String) -> String {
        guard !isEmpty else { return text }
        var result = text
        if !paths.isEmpty, let json = PayloadJSON.parse(text) {
            let (redacted, changed) = redactPaths(json)
            if changed {
                var out: [UInt8] = []
                redacted.write(into: &out)
                result = String(decoding: out, as: UTF8.self)
            }
        }
        return self.text(result)
    }

    /// Replaces every pattern match in `text`.
    public func text(_ text: String) -> String {
        guard !patterns.isEmpty, !text.isEmpty else { return text }
        var result = text
        for (pattern, anchors) in zip(patterns, anchors) {
            if let anchors, !anchors.occur(in: result) { continue }
            let range = NSRange(result.startIndex..., in: result)
            result = pattern.stringByReplacingMatches(in: result, range: range, withTemplate: Self.marker)
        }
        return result
    }

    private func redactPaths(_ json: PayloadJSON) -> (PayloadJSON, Bool) {
        var changed = false
        var value = json
        for path in paths { value = redact(value, path[...], changed: &changed) }
        return (value, changed)
    }

    private func redact(_ value: PayloadJSON, _ path: ArraySlice<Substring>, changed: inout Bool) -> PayloadJSON {
        guard let head = path.first else {
            changed = true
            return .string(Self.marker)
        }
        let rest = path.dropFirst()
        if head == "**" {
            // Zero levels here, or one level down and still `**`.
            var result = redact(value, rest, changed: &changed)
            result = mapChildren(result) { redact($0, path, changed: &changed) }
            return result
        }
        switch value {
        case .object(let members):
            return .object(members.map { key, member in
                (key, head == "*" || head == Substring(key) ? redact(member, rest, changed: &changed) : member)
            })
        case .array(let items):
            return .array(items.enumerated().map { index, item in
                head == "*" || head == Substring(String(index)) ? redact(item, rest, changed: &changed) : item
            })
        default:
            return value
        }
    }

    private func mapChildren(_ value: PayloadJSON, _ transform: (PayloadJSON) -> PayloadJSON) -> PayloadJSON {
        switch value {
        case .object(let members): return .object(members.map { ($0.0, transform($0.1)) })
        case .array(let items): return .array(items.map(transform))
        default: return value
        }
    }
}

/// Query strings in paths: values of parameters whose names say they carry a credential
/// (`api_key`, `token`, `password`, `secret`, `signature`, `auth`…) are replaced. Cheap enough for
/// the access log: a target without `?` is returned as it is.
public enum QueryRedaction {
    private static let sensitive = ["key", "token", "secret", "password", "passwd", "pwd", "auth", "signature", "sig", "credential"]
    private static let sensitiveWords = ASCIIWords(sensitive)

    public static func target(_ target: String) -> String {
        guard let question = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return target }
        // The access log calls this for every request: decide on the bytes first, without building
        // strings or arrays, and only rebuild a target that has a parameter to redact.
        let query = target.utf8[target.utf8.index(after: question)...]
        let mayRedact = query.withContiguousStorageIfAvailable(hasSensitiveName) ?? Array(query).withUnsafeBufferPointer(hasSensitiveName)
        guard mayRedact else { return target }
        var changed = false
        let parameters = target[target.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false).map { parameter -> Substring in
            guard let equals = parameter.firstIndex(of: "=") else { return parameter }
            let name = parameter[..<equals].lowercased()
            guard sensitive.contains(where: { name.contains($0) }) else { return parameter }
            changed = true
            return parameter[...equals] + Substring(Redaction.marker)
        }
        guard changed else { return target }
        return String(target[...question]) + parameters.joined(separator: "&")
    }

    /// Whether a parameter with a value may have a name containing a sensitive word: one does, ASCII
    /// case ignored, or a name has a non-ASCII byte (Unicode lower-casing decides those, the slow way).
    static func hasSensitiveName(_ query: UnsafeBufferPointer<UInt8>) -> Bool {
        var nameStart = 0
        for index in query.indices {
            switch query[index] {
            case UInt8(ascii: "&"):
                nameStart = index + 1
            case UInt8(ascii: "="):
                if nameStart < index {
                    let name = UnsafeBufferPointer(rebasing: query[nameStart..<index])
                    if name.contains(where: { $0 >= 0x80 }) || sensitiveWords.occur(in: name) { return true }
                }
                // Skip the value: the next name starts after the next '&'.
                nameStart = query.count
            default:
                break
            }
        }
        return false
    }
}
