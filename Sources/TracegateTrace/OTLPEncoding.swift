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

    /// One `ExportTraceServiceRequest` holding the spans of all `records` (send ≥ 1: MLflow
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
        json.list(records) { json, record in spans(&json, record, linksParent: linksParents) }
        json.raw("]}]}]}")
        return json.bytes
    }

    /// The root span, then the upstream span under it (OTLP kind 3, client).
    private static func spans(_ json: inout TraceJSONWriter, _ record: TraceRecord, linksParent: Bool) {
        span(
            &json, traceID: record.traceID, spanID: record.rootSpanID, parent: linksParent ? record.parentSpanID : nil,
            name: record.name, kind: 2, start: record.startTimeUnixNano, end: record.clampedEndTimeUnixNano,
            attributes: rootAttributes(record), events: record.events, status: record.status)
        guard let upstream = record.upstreamSpan else { return }
        json.raw(",")
        span(
            &json, traceID: record.traceID, spanID: upstream.spanID, parent: record.rootSpanID,
            name: upstream.name, kind: 3, start: upstream.startTimeUnixNano, end: upstream.clampedEndTimeUnixNano,
            attributes: upstreamAttributes(upstream), events: upstream.events, status: upstream.status)
    }

    private static func span(
        _ json: inout TraceJSONWriter, traceID: TraceID, spanID: SpanID, parent: SpanID?, name: String, kind: Int,
        start: UInt64, end: UInt64, attributes: [(key: String, value: AttributeValue)], events: [SpanEvent],
        status: TraceRecord.Status
    ) {
        json.raw("{")
        json.key("traceId"); json.string(traceID.hex)
        json.raw(","); json.key("spanId"); json.string(spanID.hex)
        if let parent {
            json.raw(","); json.key("parentSpanId"); json.string(parent.hex)
        }
        json.raw(","); json.key("name"); json.string(name)
        json.raw(","); json.key("kind"); json.integer(Int64(kind))
        json.raw(","); json.key("startTimeUnixNano"); json.quotedInteger(start)
        json.raw(","); json.key("endTimeUnixNano"); json.quotedInteger(end)
        json.raw(","); json.key("attributes"); json.raw("[")
        json.list(attributes) { json, item in attribute(&json, item.key, item.value) }
        json.raw("]")
        if !events.isEmpty {
            json.raw(","); json.key("events"); json.raw("[")
            json.list(events) { json, event in
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
        switch status {
        case .ok:
            json.raw("{\"code\":1}")
        case .error(let message):
            json.raw("{\"code\":2,\"message\":"); json.string(message); json.raw("}")
        }
        json.raw("}")
    }

    /// The upstream span's attributes: its type, then `attributes` by key (reserved keys and tags left out).
    static func upstreamAttributes(_ span: UpstreamSpan) -> [(key: String, value: AttributeValue)] {
        var result: [(key: String, value: AttributeValue)] = [("mlflow.spanType", .string(span.spanType.rawValue))]
        for (key, value) in span.attributes.sorted(by: { $0.key < $1.key })
        where !reservedAttributeKeys.contains(key) && !key.hasPrefix(traceTagPrefix) {
            result.append((key, value))
        }
        return result
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
