/// One kind of setting value: how it is shown in `--help`, what it accepts, and how it is parsed.
struct ValueKind<Value: Sendable>: Sendable {
    /// Placeholder shown after the flag in `--help`, e.g. `DURATION`.
    let placeholder: String
    /// What is accepted, phrased to follow "expected", e.g. "a duration such as 250ms, 5s, 2m or 1h".
    let accepted: String
    /// Boolean flags may be given bare (`--preserve-host` means true).
    var isBoolean = false
    let parse: @Sendable (String) throws(ValueRejection) -> Value
}

extension ValueKind where Value == HostPort {
    static var hostPort: Self {
        .init(placeholder: "HOST:PORT",
              accepted: "host:port, e.g. 0.0.0.0:8080 or [::1]:8080",
              parse: HostPort.validated)
    }
}

extension ValueKind where Value == UpstreamURL {
    static var upstreamURL: Self {
        .init(placeholder: "URL",
              accepted: "http://host[:port][/base-path] or https://host[:port][/base-path], e.g. http://127.0.0.1:8000",
              parse: UpstreamURL.validated)
    }
}

extension ValueKind where Value == Duration {
    static var duration: Self {
        .init(placeholder: "DURATION",
              accepted: "a duration such as 250ms, 5s, 2m or 1h",
              parse: ValueParsers.duration)
    }
}

extension ValueKind where Value == Bool {
    static var bool: Self {
        .init(placeholder: "BOOL",
              accepted: "true/false, yes/no, on/off or 1/0",
              isBoolean: true,
              parse: ValueParsers.bool)
    }
}

extension ValueKind where Value == Int {
    static func integer(_ range: ClosedRange<Int>) -> Self {
        .init(placeholder: "N",
              accepted: "a whole number from \(range.lowerBound) to \(range.upperBound)",
              parse: { (text) throws(ValueRejection) in try ValueParsers.integer(text, in: range) })
    }

    /// A size in bytes between two bounds, written in `accepted` as given (e.g. "1KiB").
    static func size(between lower: (bytes: Int, text: String), and upper: (bytes: Int, text: String)) -> Self {
        .init(placeholder: "SIZE",
              accepted: "a size between \(lower.text) and \(upper.text), such as 1024, 16K or 64KiB",
              parse: { (text) throws(ValueRejection) in
                  let bytes = try ValueParsers.size(text)
                  guard (lower.bytes...upper.bytes).contains(bytes) else { throw ValueRejection("it is out of range") }
                  return bytes
              })
    }
}

extension ValueKind where Value == Int? {
    /// A size in bytes where 0 means "no limit" (nil).
    static var sizeOrUnlimited: Self {
        .init(placeholder: "SIZE",
              accepted: "a size such as 512, 64KiB, 10MiB or 1GiB, or 0 for no limit",
              parse: { (text) throws(ValueRejection) in
                  let bytes = try ValueParsers.size(text)
                  return bytes == 0 ? nil : bytes
              })
    }
}

extension ValueKind where Value == String {
    static var headerName: Self {
        .init(placeholder: "NAME",
              accepted: "an HTTP header name made of letters, digits and !#$%&'*+-.^_`|~, e.g. X-Request-ID",
              parse: ValueParsers.token)
    }
}

extension ValueKind where Value == String? {
    /// Any file path; empty means unset (nil). The file is not checked here.
    static var optionalPath: Self {
        .init(placeholder: "PATH",
              accepted: "a file path, or nothing to leave it unset",
              parse: { (text) throws(ValueRejection) in text.isEmpty ? nil : text })
    }
}

extension ValueKind {
    /// One of an enum's raw values (any case).
    static func oneOf(_ type: Value.Type) -> Self where Value: RawRepresentable & CaseIterable, Value.RawValue == String {
        let names = Value.allCases.map(\.rawValue)
        return .init(placeholder: names.joined(separator: "|"),
                     accepted: "one of " + names.joined(separator: ", "),
                     parse: { (text) throws(ValueRejection) in try ValueParsers.oneOf(text, type) })
    }
}
