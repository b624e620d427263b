/// The 16-byte OpenTelemetry trace id of one exchange; MLflow's own id (`tr-…`) is derived from it.
public struct TraceID: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The first 8 bytes, big-endian.
    public let high: UInt64
    /// The last 8 bytes, big-endian.
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// A random id, never all zero (OpenTelemetry treats the zero id as invalid).
    ///
    /// Takes any generator so the caller can use a fast per-thread one instead of the system's.
    public static func random(using generator: inout some RandomNumberGenerator) -> TraceID {
        while true {
            let id = TraceID(high: generator.next(), low: generator.next())
            if id.high != 0 || id.low != 0 { return id }
        }
    }

    /// Parses exactly 32 hex digits (either case); nil for anything else or the all-zero id.
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 32,
              let high = TraceHex.parse(utf8[0..<16]),
              let low = TraceHex.parse(utf8[16..<32]),
              high != 0 || low != 0
        else { return nil }
        self.init(high: high, low: low)
    }

    /// Parses MLflow's form, `tr-` followed by 32 hex digits.
    public init?(mlflowID: some StringProtocol) {
        guard mlflowID.hasPrefix("tr-") else { return nil }
        self.init(hex: mlflowID.dropFirst(3))
    }

    /// 32 lower-case hex digits, as OTLP/JSON carries it.
    public var hex: String { TraceHex.format(high) + TraceHex.format(low) }

    /// MLflow's trace id: `"tr-"` + `hex`. StartTraceV3 must use exactly this string.
    public var mlflowID: String { "tr-" + hex }

    public var description: String { hex }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let id = TraceID(hex: text) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "trace id must be 32 hex digits, not all zero")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(hex)
    }
}

/// The 8-byte OpenTelemetry id of one span.
public struct SpanID: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The 8 bytes, big-endian.
    public let value: UInt64

    public init(value: UInt64) {
        self.value = value
    }

    /// A random id, never zero (OpenTelemetry treats the zero id as invalid).
    public static func random(using generator: inout some RandomNumberGenerator) -> SpanID {
        while true {
            let value: UInt64 = generator.next()
            if value != 0 { return SpanID(value: value) }
        }
    }

    /// Parses exactly 16 hex digits (either case); nil for anything else or the zero id.
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 16, let value = TraceHex.parse(utf8[...]), value != 0 else { return nil }
        self.init(value: value)
    }

    /// 16 lower-case hex digits, as OTLP/JSON carries it.
    public var hex: String { TraceHex.format(value) }

    public var description: String { hex }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let id = SpanID(hex: text) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "span id must be 16 hex digits, not all zero")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(hex)
    }
}

/// Fixed-width hex for 64-bit id halves.
enum TraceHex {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    /// 16 lower-case hex digits, zero-padded.
    static func format(_ value: UInt64) -> String {
        String(unsafeUninitializedCapacity: 16) { buffer in
            write(value, into: buffer, at: 0)
            return 16
        }
    }

    /// Writes `value` as 16 lower-case hex digits at `offset`.
    static func write(_ value: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        for i in 0..<16 {
            buffer[offset + i] = digits[Int((value >> UInt64((15 - i) * 4)) & 0xF)]
        }
    }

    /// Up to 16 hex digits (either case) as a number; nil on any other byte.
    static func parse(_ bytes: ArraySlice<UInt8>) -> UInt64? {
        guard !bytes.isEmpty, bytes.count <= 16 else { return nil }
        var value: UInt64 = 0
        for byte in bytes {
            let nibble: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt64(nibble)
        }
        return value
    }
}
