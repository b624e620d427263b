/// Where and how traces go to an OpenTelemetry backend, resolved from the standard `OTEL_*`
/// variables (OpenTelemetry SDK environment specification, OTLP exporter section).
public struct OpenTelemetryExport: Sendable, Equatable {
    /// The full OTLP/HTTP traces URL.
    public var tracesEndpoint: String
    public var headers: [Header]
    public var serviceName: String
    public var resourceAttributes: [String: String]

    public struct Header: Sendable, Equatable {
        public var name: String
        public var value: String
    }

    /// Nil when neither endpoint is set (no OpenTelemetry export).
    ///
    /// - `tracesEndpoint` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is used as given; otherwise
    ///   `endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`) + `/v1/traces`.
    /// - `headers` (`OTEL_EXPORTER_OTLP_HEADERS`) and `resourceAttributes` (`OTEL_RESOURCE_ATTRIBUTES`)
    ///   are `key=value` lists separated by commas, values percent-decoded.
    /// - `serviceName` (`OTEL_SERVICE_NAME`) wins over a `service.name` resource attribute; default `tracegate`.
    static func resolve(
        endpoint: String?, tracesEndpoint: String?, headers: String?, serviceName: String?, resourceAttributes: String?
    ) throws(ValueRejection) -> OpenTelemetryExport? {
        let url: String
        if let tracesEndpoint, !tracesEndpoint.isEmpty {
            url = tracesEndpoint
        } else if let endpoint, !endpoint.isEmpty {
            var base = endpoint
            while base.hasSuffix("/") { base.removeLast() }
            url = base + "/v1/traces"
        } else {
            return nil
        }
        var attributes = Dictionary(try pairs(resourceAttributes ?? "", what: "resource attribute"), uniquingKeysWith: { $1 })
        let service = serviceName.flatMap { $0.isEmpty ? nil : $0 } ?? attributes["service.name"] ?? "tracegate"
        attributes["service.name"] = nil
        return OpenTelemetryExport(
            tracesEndpoint: url, headers: try pairs(headers ?? "", what: "header").map { Header(name: $0.0, value: $0.1) },
            serviceName: service, resourceAttributes: attributes)
    }

    /// `k1=v1,k2=v2` with percent-encoded values (W3C Baggage-like, as the OTel specification says).
    static func pairs(_ text: String, what: String) throws(ValueRejection) -> [(String, String)] {
        var result: [(String, String)] = []
        for item in text.split(separator: ",") {
            let trimmed = String(item).trimmedOfBlanks()
            if trimmed.isEmpty { continue }
            guard let equals = trimmed.firstIndex(of: "="), equals != trimmed.startIndex else {
                throw ValueRejection("'\(trimmed)' is not a \(what) of the form key=value")
            }
            let key = String(trimmed[..<equals]).trimmedOfBlanks()
            let value = String(trimmed[trimmed.index(after: equals)...]).trimmedOfBlanks()
            guard let decoded = percentDecoded(value) else {
                throw ValueRejection("the \(what) '\(key)' has an invalid percent-encoding")
            }
            result.append((key, decoded))
        }
        return result
    }

    private static func percentDecoded(_ text: String) -> String? {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

extension ValueKind where Value == String? {
    /// An http(s) URL kept exactly as written; empty means unset.
    static var optionalHTTPURL: Self {
        .init(placeholder: "URL", accepted: "an http:// or https:// URL such as http://127.0.0.1:4318, or nothing",
              parse: { (text) throws(ValueRejection) in
                  if text.isEmpty { return nil }
                  guard UpstreamURL.parse(text) != nil else { throw ValueRejection() }
                  return text
              })
    }

    /// `key=value,key2=value2` with percent-encoded values (kept as written); empty means unset.
    static func keyValueList(what: String) -> Self {
        .init(placeholder: "K=V,...", accepted: "comma-separated key=value pairs with percent-encoded values, or nothing",
              parse: { (text) throws(ValueRejection) in
                  if text.isEmpty { return nil }
                  _ = try OpenTelemetryExport.pairs(text, what: what)
                  return text
              })
    }
}

extension String {
    fileprivate func trimmedOfBlanks() -> String {
        let set = " \t"
        var slice = Substring(self)
        while let first = slice.first, set.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, set.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}
