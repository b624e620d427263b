/// A span or event attribute value: the four OTLP scalar kinds tracegate uses.
public enum AttributeValue: Sendable, Hashable, Codable {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)

    private enum CodingKeys: String, CodingKey {
        case string, int, double, bool
    }

    /// Stored as `{"string": "…"}`, `{"int": 5}`, `{"double": 0.5}` or `{"bool": true}`; a
    /// non-finite double is stored as the string `"NaN"`, `"Infinity"` or `"-Infinity"`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let value = try container.decodeIfPresent(String.self, forKey: .string) {
            self = .string(value)
        } else if let value = try container.decodeIfPresent(Int64.self, forKey: .int) {
            self = .int(value)
        } else if container.contains(.double) {
            if let text = try? container.decode(String.self, forKey: .double) {
                guard let value = AttributeValue.nonFiniteDouble(text) else {
                    throw DecodingError.dataCorruptedError(
                        forKey: .double, in: container, debugDescription: "not a number: \(text)")
                }
                self = .double(value)
            } else {
                self = .double(try container.decode(Double.self, forKey: .double))
            }
        } else if let value = try container.decodeIfPresent(Bool.self, forKey: .bool) {
            self = .bool(value)
        } else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: decoder.codingPath,
                debugDescription: "attribute value needs one of string, int, double, bool"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .string(let value): try container.encode(value, forKey: .string)
        case .int(let value): try container.encode(value, forKey: .int)
        case .double(let value):
            if let text = AttributeValue.nonFiniteName(value) {
                try container.encode(text, forKey: .double)
            } else {
                try container.encode(value, forKey: .double)
            }
        case .bool(let value): try container.encode(value, forKey: .bool)
        }
    }

    /// The protobuf-JSON name of a non-finite double (`NaN`, `Infinity`, `-Infinity`); nil if finite.
    static func nonFiniteName(_ value: Double) -> String? {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
        return nil
    }

    private static func nonFiniteDouble(_ text: String) -> Double? {
        switch text {
        case "NaN": return .nan
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        default: return nil
        }
    }
}

/// A timestamped note on a span, e.g. an `exception` event for an upstream failure.
public struct SpanEvent: Sendable, Hashable, Codable {
    /// Event name; OpenTelemetry uses `exception` for failures.
    public var name: String
    public var timeUnixNano: UInt64
    /// For `exception`: `exception.type`, `exception.message`.
    public var attributes: [String: AttributeValue]

    public init(name: String, timeUnixNano: UInt64, attributes: [String: AttributeValue] = [:]) {
        self.name = name
        self.timeUnixNano = timeUnixNano
        self.attributes = attributes
    }

    /// An OpenTelemetry `exception` event with `exception.type` and `exception.message`.
    public static func exception(type: String, message: String, timeUnixNano: UInt64) -> SpanEvent {
        SpanEvent(name: "exception", timeUnixNano: timeUnixNano, attributes: [
            "exception.type": .string(type),
            "exception.message": .string(message),
        ])
    }
}

/// Attribute keys that MLflow or the OpenTelemetry HTTP conventions give a meaning to.
public enum TraceAttributeKey {
    public static let httpRequestMethod = "http.request.method"
    public static let urlPath = "url.path"
    public static let httpResponseStatusCode = "http.response.status_code"
    public static let serverAddress = "server.address"
    public static let serverPort = "server.port"
    /// JSON text `{"input_tokens":N,"output_tokens":N,"total_tokens":N}`; see `tokenUsage(…)`.
    public static let tokenUsage = "mlflow.chat.tokenUsage"
    /// `"openai"` or `"anthropic"`: picks the MLflow UI's chat renderer.
    public static let messageFormat = "mlflow.message.format"
    /// Model name; MLflow prices the call from it.
    public static let model = "mlflow.llm.model"
    public static let provider = "mlflow.llm.provider"

    /// The value for `mlflow.chat.tokenUsage`. Always carries `total_tokens` (MLflow adds a
    /// missing key as 0); `total` defaults to input + output.
    public static func tokenUsage(
        inputTokens: Int, outputTokens: Int, totalTokens: Int? = nil,
        cacheReadInputTokens: Int? = nil, cacheCreationInputTokens: Int? = nil
    ) -> AttributeValue {
        var text = "{\"input_tokens\":\(inputTokens),\"output_tokens\":\(outputTokens)"
        let sum = inputTokens.addingReportingOverflow(outputTokens)
        text += ",\"total_tokens\":\(totalTokens ?? (sum.overflow ? Int.max : sum.partialValue))"
        if let cacheReadInputTokens { text += ",\"cache_read_input_tokens\":\(cacheReadInputTokens)" }
        if let cacheCreationInputTokens {
            text += ",\"cache_creation_input_tokens\":\(cacheCreationInputTokens)"
        }
        return .string(text + "}")
    }
}
