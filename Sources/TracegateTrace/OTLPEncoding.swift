/// OTLP/HTTP JSON for MLflow's `POST /v1/traces`: the request that creates traces and stores
/// their spans (see shared/reference/mlflow-trace-ingest.md §4).
public enum OTLPJSON {
    /// Instrumentation scope name on every span.
    public static let scopeName = "tracegate"

    /// Root-span attribute keys written from dedicated `TraceRecord` fields. The same keys in
    /// `TraceRecord.attributes` are ignored, as are `mlflow.traceTag.*` keys (tags come only from
    /// `TraceRecord.tags`) and `gen_ai.conversation.id` (MLflow reads it as a session id, which
    /// must pass the 250 limit).
    public static let reservedAttributeKeys: Set<String> = [
        "mlflow.spanType", "mlflow.spanInputs", "mlflow.spanOutputs", "mlflow.traceRequestId",
        "user.id", "session.id", "gen_ai.conversation.id",
    ]
    static let traceTagPrefix = "mlflow.traceTag."

    /// One `ExportTraceServiceRequest` holding the root spans of all `records` (send ≥ 1: MLflow
    /// answers 400 "no spans found" to an empty one).
    ///
    /// camelCase keys, hex ids, 64-bit numbers as decimal strings, `kind` 2 (server), status 1/2
    /// with the error message. `serviceName` becomes `service.name`; resource attributes become
    /// trace tags on the server (except `mlflow.*` and `telemetry.sdk.*` keys). A session id
    /// over 250 is shortened here too (`MLflowLimits.shortened`), because one would make MLflow
    /// refuse the whole batch.
    ///
    /// `linksParents`: give a span whose request carried `traceparent` the caller's span as its parent.
    /// Off for MLflow, which keeps a trace IN_PROGRESS and without previews until its root arrives
    /// (the caller's spans may never reach it); there the caller's span id is an attribute instead.
    public static func exportRequest(
        _ records: [TraceRecord], serviceName: String, resourceAttributes: [String: String], linksParents: Bool = false
    ) -> [UInt8] {
        var json = TraceJSONWriter(reservingCapacity: 1024 + records.count * 2048)
        json.raw("{\"resourceSpans\":[{\"resource\":{\"attributes\":[")
        var resource = resourceAttributes.filter { $0.key != "service.name" }
            .map { ($0.key, AttributeValue.string($0.value)) }
            .sorted { $0.0 < $1.0 }
        resource.insert(("service.name", .string(serviceName)), at: 0)
        json.list(resource) { json, item in attribute(&json, item.0, item.1) }
        json.raw("]},\"scopeSpans\":[{\"scope\":{\"name\":")
        json.string(scopeName)
        json.raw("},\"spans\":[")
        json.list(records) { json, record in span(&json, record, linksParent: linksParents) }
        json.raw("]}]}]}")
        return json.bytes
    }

    private static func span(_ json: inout TraceJSONWriter, _ record: TraceRecord, linksParent: Bool) {
        json.raw("{")
        json.key("traceId"); json.string(record.traceID.hex)
        json.raw(","); json.key("spanId"); json.string(record.rootSpanID.hex)
        if linksParent, let parent = record.parentSpanID {
            json.raw(","); json.key("parentSpanId"); json.string(parent.hex)
        }
        json.raw(","); json.key("name"); json.string(record.name)
        json.raw(","); json.key("kind"); json.raw("2")
        json.raw(","); json.key("startTimeUnixNano"); json.quotedInteger(record.startTimeUnixNano)
        json.raw(","); json.key("endTimeUnixNano"); json.quotedInteger(record.clampedEndTimeUnixNano)
        json.raw(","); json.key("attributes"); json.raw("[")
        json.list(rootAttributes(record)) { json, item in attribute(&json, item.key, item.value) }
        json.raw("]")
        if !record.events.isEmpty {
            json.raw(","); json.key("events"); json.raw("[")
            json.list(record.events) { json, event in
                json.raw("{"); json.key("name"); json.string(event.name)
                json.raw(","); json.key("timeUnixNano"); json.quotedInteger(event.timeUnixNano)
                json.raw(","); json.key("attributes"); json.raw("[")
                json.list(event.attributes.sorted { $0.key < $1.key }) { json, item in
                    attribute(&json, item.key, item.value)
                }
                json.raw("]}")
            }
            json.raw("]")
        }
        json.raw(","); json.key("status")
        switch record.status {
        case .ok:
            json.raw("{\"code\":1}")
        case .error(let message):
            json.raw("{\"code\":2,\"message\":"); json.string(message); json.raw("}")
        }
        json.raw("}")
    }

    /// The root span's attributes in a fixed order: dedicated fields, then `attributes` by key,
    /// then `mlflow.traceTag.<key>` by key.
    static func rootAttributes(_ record: TraceRecord) -> [(key: String, value: AttributeValue)] {
        var result: [(key: String, value: AttributeValue)] = [
            ("mlflow.spanType", .string(record.spanType.rawValue)),
        ]
        if let inputs = record.inputs { result.append(("mlflow.spanInputs", .string(inputs))) }
        if let outputs = record.outputs { result.append(("mlflow.spanOutputs", .string(outputs))) }
        if let user = record.user { result.append(("user.id", .string(user))) }
        if let session = record.session {
            result.append(("session.id", .string(MLflowLimits.shortened(session, to: MLflowLimits.sessionID))))
        }
        if let parent = record.parentSpanID { result.append(("tracegate.parent_span_id", .string(parent.hex))) }
        for (key, value) in record.attributes.sorted(by: { $0.key < $1.key })
        where !reservedAttributeKeys.contains(key) && !key.hasPrefix(traceTagPrefix) {
            result.append((key, value))
        }
        for tag in MLflowLimits.exportableTags(record.tags, defaultTraceName: record.name) {
            result.append((traceTagPrefix + tag.key, .string(tag.value)))
        }
        return result
    }

    private static func attribute(_ json: inout TraceJSONWriter, _ key: String, _ value: AttributeValue) {
        json.raw("{\"key\":"); json.string(key); json.raw(",\"value\":{")
        switch value {
        case .string(let text): json.key("stringValue"); json.string(text)
        case .int(let number): json.key("intValue"); json.quotedInteger(number)
        case .double(let number): json.key("doubleValue"); json.double(number)
        case .bool(let flag): json.key("boolValue"); json.bool(flag)
        }
        json.raw("}}")
    }
}
