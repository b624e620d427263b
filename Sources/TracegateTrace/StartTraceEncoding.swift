import Foundation

/// The StartTraceV3 call (`POST /api/3.0/mlflow/traces`), sent after the OTLP export: the only
/// way to set `client_request_id` and trace metadata (reference §5).
public enum StartTraceV3 {
    /// The request body for `record` in experiment `experimentID`.
    ///
    /// `request_time` (RFC 3339, ms) and `execution_duration` (`"<s>.<ms>s"`) are computed from
    /// whole milliseconds exactly as the OTLP ingest does. Metadata: `record.metadata` (invalid
    /// keys left out, values capped at 8000), then `mlflow.trace.user`, `mlflow.trace.session`
    /// (≤ 250) and `mlflow.trace_schema.version` = `"3"`. Previews only when set (capped at
    /// 1000). `request_time` and `state` come last: a server that meets a bad field keeps what it
    /// parsed before it and still answers 200, so `responseConfirms` checking those two also
    /// catches a body cut short anywhere before them.
    public static func body(_ record: TraceRecord, experimentID: String) -> [UInt8] {
        var json = TraceJSONWriter(reservingCapacity: 1024)
        json.raw("{\"trace\":{\"trace_info\":{")
        json.key("trace_id"); json.string(record.traceID.mlflowID)
        json.raw(","); json.key("trace_location")
        json.raw("{\"type\":\"MLFLOW_EXPERIMENT\",\"mlflow_experiment\":{\"experiment_id\":")
        json.string(experimentID); json.raw("}}")
        if let id = record.clientRequestID {
            json.raw(","); json.key("client_request_id")
            json.string(MLflowLimits.shortened(id, to: MLflowLimits.clientRequestID))
        }
        if let preview = record.requestPreview {
            json.raw(","); json.key("request_preview")
            json.string(MLflowLimits.truncated(preview, to: MLflowLimits.preview))
        }
        if let preview = record.responsePreview {
            json.raw(","); json.key("response_preview")
            json.string(MLflowLimits.truncated(preview, to: MLflowLimits.preview))
        }
        json.raw(","); json.key("trace_metadata"); json.raw("{")
        json.list(metadata(record)) { json, item in
            json.string(item.key); json.raw(":"); json.string(item.value)
        }
        json.raw("},"); json.key("tags"); json.raw("{")
        json.list(MLflowLimits.exportableTags(record.tags, defaultTraceName: record.name)) { json, item in
            json.string(item.key); json.raw(":"); json.string(item.value)
        }
        json.raw("},"); json.key("execution_duration"); json.string(executionDuration(record))
        json.raw(","); json.key("request_time"); json.string(requestTime(record))
        json.raw(","); json.key("state"); json.string(state(record))
        json.raw("}}}")
        return json.bytes
    }

    /// Whether a 200 response to `body(record, …)` really stored it: the echoed `trace_info` has
    /// our trace id, state and request time (compared as instants, since protobuf JSON may write
    /// `…:07Z` for `…:07.000Z`). MLflow answers 200 even to a body it could only half parse.
    public static func responseConfirms(_ responseBody: [UInt8], record: TraceRecord) -> Bool {
        guard let object = try? JSONSerialization.jsonObject(with: Data(responseBody)),
              let root = object as? [String: Any],
              let trace = root["trace"] as? [String: Any],
              let info = trace["trace_info"] as? [String: Any],
              info["trace_id"] as? String == record.traceID.mlflowID,
              info["state"] as? String == state(record),
              let time = info["request_time"] as? String,
              let millis = TraceTimestamp.parseMillis(time)
        else { return false }
        return millis == Int64(record.startTimeUnixNano / 1_000_000)
    }

    /// `"OK"` or `"ERROR"`.
    static func state(_ record: TraceRecord) -> String {
        switch record.status {
        case .ok: return "OK"
        case .error: return "ERROR"
        }
    }

    /// The start as RFC 3339 UTC with milliseconds, e.g. `2026-11-24T23:38:07.174Z`.
    static func requestTime(_ record: TraceRecord) -> String {
        TraceTimestamp.format(unixMillis: record.startTimeUnixNano / 1_000_000)
    }

    /// End ms − start ms (as MLflow computes it from spans) as a protobuf duration, e.g. `"1.250s"`.
    static func executionDuration(_ record: TraceRecord) -> String {
        let millis = record.clampedEndTimeUnixNano / 1_000_000 - record.startTimeUnixNano / 1_000_000
        let fraction = String(millis % 1000)
        return "\(millis / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction + "s"
    }

    /// Trace metadata to send, sorted by key; the fixed keys win over `record.metadata`.
    static func metadata(_ record: TraceRecord) -> [(key: String, value: String)] {
        var result: [String: String] = [:]
        for (key, value) in record.metadata where MLflowLimits.isValidMetadataKey(key) {
            result[key] = MLflowLimits.metadataValue(value)
        }
        if let user = record.user { result["mlflow.trace.user"] = MLflowLimits.metadataValue(user) }
        if let session = record.session { result["mlflow.trace.session"] = session }
        if let session = result["mlflow.trace.session"] {
            result["mlflow.trace.session"] = MLflowLimits.shortened(session, to: MLflowLimits.sessionID)
        }
        result["mlflow.trace_schema.version"] = "3"
        return result.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
    }
}
