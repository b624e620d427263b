import Foundation

/// A `TraceRecord` as one line of JSON: exactly the object its `Codable` conformance describes (keys
/// sorted, absent optionals left out), written straight into bytes. The trace file and the spool
/// hold these lines and read them back with `JSONDecoder`; Foundation's `JSONEncoder` would cost
/// several times more, on the builder thread that forwarding shares the CPUs with.
public enum TraceRecordJSON {
    /// The record's JSON object followed by a newline.
    public static func line(_ record: TraceRecord) -> [UInt8] {
        var bytes: [UInt8] = []
        appendLine(record, to: &bytes)
        return bytes
    }

    /// Appends the record's line to `bytes` in place (a group of lines is built in one buffer).
    public static func appendLine(_ record: TraceRecord, to bytes: inout [UInt8]) {
        var json = TraceJSONWriter(reservingCapacity: 0)
        swap(&json.bytes, &bytes)
        json.bytes.reserveCapacity(json.bytes.count + 512 + (record.inputs?.utf8.count ?? 0) + (record.outputs?.utf8.count ?? 0))
        write(record, into: &json)
        json.raw("\n")
        swap(&json.bytes, &bytes)
    }

    /// The record's JSON object.
    static func write(_ record: TraceRecord, into json: inout TraceJSONWriter) {
        json.raw("{")
        json.key("attributes")
        attributes(record.attributes, into: &json)
        if let id = record.clientRequestID { json.raw(","); json.key("clientRequestID"); json.string(id) }
        json.raw(","); json.key("endTimeUnixNano"); json.integer(record.endTimeUnixNano)
        json.raw(","); json.key("events"); events(record.events, into: &json)
        if let inputs = record.inputs { json.raw(","); json.key("inputs"); json.string(inputs) }
        json.raw(","); json.key("metadata"); strings(record.metadata, into: &json)
        json.raw(","); json.key("name"); json.string(record.name)
        if let outputs = record.outputs { json.raw(","); json.key("outputs"); json.string(outputs) }
        if let parent = record.parentSpanID { json.raw(","); json.key("parentSpanID"); json.string(parent.hex) }
        if let preview = record.requestPreview { json.raw(","); json.key("requestPreview"); json.string(preview) }
        if let preview = record.responsePreview { json.raw(","); json.key("responsePreview"); json.string(preview) }
        json.raw(","); json.key("rootSpanID"); json.string(record.rootSpanID.hex)
        if let session = record.session { json.raw(","); json.key("session"); json.string(session) }
        json.raw(","); json.key("spanType"); json.string(record.spanType.rawValue)
        json.raw(","); json.key("startTimeUnixNano"); json.integer(record.startTimeUnixNano)
        json.raw(","); json.key("status"); status(record.status, into: &json)
        json.raw(","); json.key("tags"); strings(record.tags, into: &json)
        json.raw(","); json.key("traceID"); json.string(record.traceID.hex)
        if let span = record.upstreamSpan { json.raw(","); json.key("upstreamSpan"); upstreamSpan(span, into: &json) }
        if let user = record.user { json.raw(","); json.key("user"); json.string(user) }
        json.raw("}")
    }

    private static func upstreamSpan(_ span: UpstreamSpan, into json: inout TraceJSONWriter) {
        json.raw("{"); json.key("attributes"); attributes(span.attributes, into: &json)
        json.raw(","); json.key("endTimeUnixNano"); json.integer(span.endTimeUnixNano)
        json.raw(","); json.key("events"); events(span.events, into: &json)
        json.raw(","); json.key("name"); json.string(span.name)
        json.raw(","); json.key("spanID"); json.string(span.spanID.hex)
        json.raw(","); json.key("spanType"); json.string(span.spanType.rawValue)
        json.raw(","); json.key("startTimeUnixNano"); json.integer(span.startTimeUnixNano)
        json.raw(","); json.key("status"); status(span.status, into: &json)
        json.raw("}")
    }

    private static func events(_ events: [SpanEvent], into json: inout TraceJSONWriter) {
        json.raw("[")
        json.list(events) { json, event in
            json.raw("{"); json.key("attributes"); attributes(event.attributes, into: &json)
            json.raw(","); json.key("name"); json.string(event.name)
            json.raw(","); json.key("timeUnixNano"); json.integer(event.timeUnixNano)
            json.raw("}")
        }
        json.raw("]")
    }

    private static func status(_ status: TraceRecord.Status, into json: inout TraceJSONWriter) {
        switch status {
        case .ok: json.raw("{\"code\":\"ok\"}")
        case .error(let message): json.raw("{\"code\":\"error\",\"message\":"); json.string(message); json.raw("}")
        }
    }

    private static func attributes(_ values: [String: AttributeValue], into json: inout TraceJSONWriter) {
        members(values, into: &json) { json, value in
            json.raw("{")
            switch value {
            case .string(let value): json.key("string"); json.string(value)
            case .int(let value): json.key("int"); json.integer(value)
            case .double(let value): json.key("double"); json.double(value)
            case .bool(let value): json.key("bool"); json.bool(value)
            }
            json.raw("}")
        }
    }

    private static func strings(_ values: [String: String], into json: inout TraceJSONWriter) {
        members(values, into: &json) { json, value in json.string(value) }
    }

    /// A JSON object of `values`, keys in byte order (as `JSONEncoder`'s `.sortedKeys`).
    private static func members<Value>(
        _ values: [String: Value], into json: inout TraceJSONWriter, value write: (inout TraceJSONWriter, Value) -> Void
    ) {
        json.raw("{")
        json.list(values.sorted { precedesInByteOrder($0.key, $1.key) }) { json, pair in
            json.string(pair.key)
            json.raw(":")
            write(&json, pair.value)
        }
        json.raw("}")
    }

    /// UTF-8 byte order, compared in place for native strings (Swift's `<` orders by Unicode scalars
    /// after normalisation, which is not `JSONEncoder`'s order for every key).
    static func precedesInByteOrder(_ a: String, _ b: String) -> Bool {
        let fast = a.utf8.withContiguousStorageIfAvailable { a in
            b.utf8.withContiguousStorageIfAvailable { b in
                let common = min(a.count, b.count)
                if common > 0, let aBase = a.baseAddress, let bBase = b.baseAddress {
                    let order = memcmp(aBase, bBase, common)
                    if order != 0 { return order < 0 }
                }
                return a.count < b.count
            }
        }
        return (fast ?? nil) ?? a.utf8.lexicographicallyPrecedes(b.utf8)
    }
}
