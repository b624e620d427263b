import Foundation

/// User, session and client request id taken from request headers, cleaned before they reach
/// MLflow.
///
/// Each value is trimmed of surrounding white space; empty means absent. A value containing a
/// control character (C0, DEL, C1) is dropped and a warning recorded: it is never exported.
/// A value longer than its MLflow field allows is *shortened*, not dropped: the field gets the
/// stand-in of `MLflowLimits.shortened` (a prefix, `~` and a 16-hex-digit hash of the whole
/// value, exactly fitting the limit), so long ids still group and stay distinct, and the full
/// value (capped at 8000) goes into a tag. A session id over 250 would make MLflow reject the
/// whole OTLP batch, so one never gets through; a user id is kept to 250 too, because MLflow cuts
/// every metadata value to 250 when it returns a trace (two long user ids would read back alike).
public struct IdentityValues: Sendable, Equatable {
    /// Tag holding a user id that was longer than 250.
    public static let userFullTag = "tracegate.user_full"
    /// Tag holding a session id that was longer than 250.
    public static let sessionFullTag = "tracegate.session_full"
    /// Tag holding a client request id that was longer than 50.
    public static let requestIDFullTag = "tracegate.request_id_full"

    /// → `user.id` / metadata `mlflow.trace.user`; at most 250 (what MLflow returns of a metadata value).
    public var user: String?
    /// → `session.id` / metadata `mlflow.trace.session`; at most 250.
    public var session: String?
    /// → StartTraceV3 `client_request_id`; at most 50.
    public var clientRequestID: String?
    /// Full values that did not fit their field, keyed by `sessionFullTag` / `requestIDFullTag`.
    public var tags: [String: String]
    /// What was dropped or shortened, in field order (user, session, request id).
    public var warnings: [IdentityWarning]

    public init(
        user: String? = nil, session: String? = nil, clientRequestID: String? = nil,
        tags: [String: String] = [:], warnings: [IdentityWarning] = []
    ) {
        self.user = user
        self.session = session
        self.clientRequestID = clientRequestID
        self.tags = tags
        self.warnings = warnings
    }

    /// Cleans the three raw header values (nil = header absent).
    public static func validate(user: String?, session: String?, requestID: String?) -> IdentityValues {
        var result = IdentityValues()
        result.user = result.clean(user, field: .user, limit: MLflowLimits.returnedMetadataValue, fullTag: userFullTag)
        result.session = result.clean(
            session, field: .session, limit: MLflowLimits.sessionID, fullTag: sessionFullTag)
        result.clientRequestID = result.clean(
            requestID, field: .clientRequestID, limit: MLflowLimits.clientRequestID,
            fullTag: requestIDFullTag)
        return result
    }

    /// False when both ends are printable ASCII, the usual case: then Foundation's trimming (costly
    /// per call) cannot change the value.
    static func mayNeedTrimming(_ value: String) -> Bool {
        guard let first = value.utf8.first, let last = value.utf8.last else { return false }
        return !(0x21...0x7E).contains(first) || !(0x21...0x7E).contains(last)
    }

    private mutating func clean(
        _ raw: String?, field: IdentityWarning.Field, limit: Int, fullTag: String?
    ) -> String? {
        guard let raw else { return nil }
        let value = Self.mayNeedTrimming(raw) ? raw.trimmingCharacters(in: .whitespacesAndNewlines) : raw
        if MLflowLimits.containsControlCharacter(value) {
            warnings.append(IdentityWarning(field: field, problem: .controlCharacter))
            return nil
        }
        if value.isEmpty { return nil }
        let length = MLflowLimits.length(value)
        guard length > limit else { return value }
        if let fullTag { tags[fullTag] = MLflowLimits.tagValue(value) }
        warnings.append(IdentityWarning(
            field: field, problem: .shortened(length: length, limit: limit, fullValueTag: fullTag)))
        return MLflowLimits.shortened(value, to: limit)
    }
}

/// Why an identity value was dropped or changed. Never carries the value itself, so it is safe
/// to log.
public struct IdentityWarning: Sendable, Hashable, CustomStringConvertible {
    /// Which header value.
    public enum Field: String, Sendable, Hashable {
        case user = "user id"
        case session = "session id"
        case clientRequestID = "client request id"
    }

    public enum Problem: Sendable, Hashable {
        /// Contained a C0, DEL or C1 control character: dropped.
        case controlCharacter
        /// Longer than MLflow allows: a shortened stand-in was exported, the full value (capped
        /// at 8000) went to `fullValueTag` if there is one.
        case shortened(length: Int, limit: Int, fullValueTag: String?)
    }

    public var field: Field
    public var problem: Problem

    public init(field: Field, problem: Problem) {
        self.field = field
        self.problem = problem
    }

    public var description: String {
        switch problem {
        case .controlCharacter:
            return "\(field.rawValue) contains a control character; not exported"
        case .shortened(let length, let limit, let tag):
            let kept = tag.map { "; full value in tag \($0)" } ?? ""
            return "\(field.rawValue) has \(length) characters, MLflow allows \(limit); exported shortened\(kept)"
        }
    }
}
