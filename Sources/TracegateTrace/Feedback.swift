import Foundation

/// A person's feedback on one traced exchange, posted to `feedback_path` and delivered to MLflow as
/// an assessment once the trace exists there. `id` travels in the assessment's metadata
/// (`tracegate.feedback_id`), so a delivery that may or may not have happened is checked, not repeated.
public struct Feedback: Sendable, Equatable, Codable {
    public static let idMetadataKey = "tracegate.feedback_id"

    public var id: String
    /// `tr-` and 32 hex digits.
    public var traceID: String
    public var name: String
    /// The value as JSON text: a boolean, number, string, array or object.
    public var valueJSON: String
    public var rationale: String?
    public var metadata: [String: String]
    /// Who gave it (the assessment's `source_id`), from the same identity sources as traces.
    public var user: String?
    public var createdMillis: Int64
    /// Deliveries tried so far; from the second on, MLflow is asked first whether it has it already.
    public var attempts: Int
    /// Not retried before this time (after the trace was not there yet).
    public var notBeforeMillis: Int64

    public init(
        id: String, traceID: String, name: String, valueJSON: String, rationale: String? = nil, metadata: [String: String] = [:],
        user: String? = nil, createdMillis: Int64, attempts: Int = 0, notBeforeMillis: Int64 = 0
    ) {
        self.id = id
        self.traceID = traceID
        self.name = name
        self.valueJSON = valueJSON
        self.rationale = rationale
        self.metadata = metadata
        self.user = user
        self.createdMillis = createdMillis
        self.attempts = attempts
        self.notBeforeMillis = notBeforeMillis
    }

    /// The body of `POST /api/3.0/mlflow/traces/{trace_id}/assessments`: a `HUMAN` feedback.
    public var createAssessmentJSON: [UInt8] {
        var source: [(String, PayloadJSON)] = [("source_type", .string("HUMAN"))]
        if let user { source.append(("source_id", .string(user))) }
        var allMetadata = metadata
        allMetadata[Self.idMetadataKey] = id
        var assessment: [(String, PayloadJSON)] = [
            ("assessment_name", .string(name)), ("trace_id", .string(traceID)), ("source", .object(source)),
            ("feedback", .object([("value", PayloadJSON.parse(valueJSON) ?? .string(valueJSON))])),
        ]
        if let rationale { assessment.append(("rationale", .string(rationale))) }
        assessment.append(("metadata", .object(allMetadata.sorted(by: { $0.key < $1.key }).map { ($0.key, .string($0.value)) })))
        return Array(PayloadJSON.object([("assessment", .object(assessment))]).serialized.utf8)
    }

    /// The experiment of a `GET /api/3.0/mlflow/traces/{trace_id}` answer.
    public static func experimentID(inTraceInfo response: [UInt8]) -> String? {
        guard let json = PayloadJSON.parse(response) else { return nil }
        let info = json["trace"]?["trace_info"] ?? json["trace_info"]
        return info?["trace_location"]?["mlflow_experiment"]?["experiment_id"]?.string
    }

    /// Whether a `GET /api/3.0/mlflow/traces/{trace_id}` answer lists this feedback already.
    public func isListed(inTraceInfo response: [UInt8]) -> Bool {
        guard let json = PayloadJSON.parse(response) else { return false }
        let info = json["trace"]?["trace_info"] ?? json["trace_info"]
        return (info?["assessments"]?.array ?? []).contains { $0["metadata"]?[Self.idMetadataKey]?.string == id }
    }
}

/// What a client posts to `feedback_path`, checked; `FeedbackRequest.parse` names the first problem.
public struct FeedbackRequest: Sendable, Equatable {
    public enum Exchange: Sendable, Equatable {
        /// The id echoed in `X-Request-ID`.
        case requestID(String)
        /// `tr-…` (as in `X-MLflow-Trace-Id`).
        case traceID(String)
    }

    public var exchange: Exchange
    public var name: String
    public var valueJSON: String
    public var rationale: String?
    public var metadata: [String: String]

    public static let maxNameLength = 250
    public static let maxRationaleLength = 8000
    public static let maxMetadataEntries = 50

    public static func parse(_ body: [UInt8]) -> Result<FeedbackRequest, FeedbackRejection> {
        guard let json = PayloadJSON.parse(body), json.isObject else {
            return .failure(.init("the body must be a JSON object such as {\"request_id\": \"…\", \"name\": \"thumbs_up\", \"value\": true}"))
        }
        let exchange: Exchange
        if let given = json["trace_id"], !given.isNull {
            guard let text = given.string, let id = normalizedTraceID(text) else {
                return .failure(.init("trace_id must be tr- followed by 32 hex digits, as in X-MLflow-Trace-Id"))
            }
            exchange = .traceID(id)
        } else if let given = json["request_id"], !given.isNull {
            guard let text = given.string, !text.isEmpty, text.count <= 8000, !MLflowLimits.containsControlCharacter(text) else {
                return .failure(.init("request_id must be a non-empty string without control characters, as in X-Request-ID"))
            }
            exchange = .requestID(text)
        } else {
            return .failure(.init("name the exchange with request_id (from X-Request-ID) or trace_id (from X-MLflow-Trace-Id)"))
        }
        guard let name = json["name"]?.string, !name.isEmpty, name.count <= maxNameLength, !MLflowLimits.containsControlCharacter(name)
        else {
            return .failure(.init("name must be a string of 1 to \(maxNameLength) characters without control characters"))
        }
        guard let value = json["value"], !value.isNull else {
            return .failure(.init("value is required: a boolean, number, string, array or object"))
        }
        var rationale: String?
        if let given = json["rationale"], !given.isNull {
            guard let text = given.string, text.count <= maxRationaleLength else {
                return .failure(.init("rationale must be a string of at most \(maxRationaleLength) characters"))
            }
            rationale = text
        }
        var metadata: [String: String] = [:]
        if let given = json["metadata"], !given.isNull {
            guard let members = given.members, members.count <= maxMetadataEntries else {
                return .failure(.init("metadata must be an object of at most \(maxMetadataEntries) string values"))
            }
            for (key, member) in members {
                guard let text = member.string, !key.isEmpty, key.count <= 250, text.count <= 8000, key != Feedback.idMetadataKey else {
                    return .failure(.init("metadata must map names (1 to 250 characters) to strings of at most 8000 characters"))
                }
                metadata[key] = text
            }
        }
        return .success(FeedbackRequest(exchange: exchange, name: name, valueJSON: value.serialized, rationale: rationale, metadata: metadata))
    }

    /// `tr-<32 hex>` or the bare 32 hex digits → `tr-<32 lowercase hex>`.
    static func normalizedTraceID(_ text: String) -> String? {
        let hex = text.hasPrefix("tr-") ? text.dropFirst(3) : Substring(text)
        guard hex.utf8.count == 32, hex.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x41...0x46).contains($0) || (0x61...0x66).contains($0) })
        else { return nil }
        return "tr-" + hex.lowercased()
    }
}

public struct FeedbackRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
