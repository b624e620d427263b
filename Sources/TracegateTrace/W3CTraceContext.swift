/// A W3C Trace Context `traceparent` value: `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
public struct W3CTraceParent: Sendable, Equatable {
    public var traceIDHigh: UInt64
    public var traceIDLow: UInt64
    public var parentSpanID: UInt64
    public var flags: UInt8

    public init(traceIDHigh: UInt64, traceIDLow: UInt64, parentSpanID: UInt64, flags: UInt8) {
        self.traceIDHigh = traceIDHigh
        self.traceIDLow = traceIDLow
        self.parentSpanID = parentSpanID
        self.flags = flags
    }

    /// Parses a `traceparent` header value; nil when it is not a valid version-00 value (or a later
    /// version whose first fields do not parse), as the specification asks a receiver to ignore it.
    public init?(_ value: String) {
        let bytes = Array(value.utf8)
        guard bytes.count >= 55, bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"), bytes[52] == UInt8(ascii: "-"),
            let version = Self.hex(bytes[0..<2]), version != 0xFF,
            let high = Self.hex(bytes[3..<19]), let low = Self.hex(bytes[19..<35]),
            let parent = Self.hex(bytes[36..<52]), let flags = Self.hex(bytes[53..<55])
        else { return nil }
        // Version 00 is exactly 55 characters; later versions may append fields after a dash.
        if version == 0 && bytes.count != 55 { return nil }
        if version != 0 && bytes.count > 55 && bytes[55] != UInt8(ascii: "-") { return nil }
        guard high != 0 || low != 0, parent != 0 else { return nil }
        self.init(traceIDHigh: high, traceIDLow: low, parentSpanID: parent, flags: UInt8(flags))
    }

    /// The value to send onward, naming `spanID` as the parent of what follows. Built in one buffer:
    /// it is made on the event loop for every traced request.
    public static func header(traceIDHigh: UInt64, traceIDLow: UInt64, spanID: UInt64, sampled: Bool) -> String {
        String(unsafeUninitializedCapacity: 55) { buffer in
            buffer[0] = UInt8(ascii: "0")
            buffer[1] = UInt8(ascii: "0")
            buffer[2] = UInt8(ascii: "-")
            TraceHex.write(traceIDHigh, into: buffer, at: 3)
            TraceHex.write(traceIDLow, into: buffer, at: 19)
            buffer[35] = UInt8(ascii: "-")
            TraceHex.write(spanID, into: buffer, at: 36)
            buffer[52] = UInt8(ascii: "-")
            buffer[53] = UInt8(ascii: "0")
            buffer[54] = sampled ? UInt8(ascii: "1") : UInt8(ascii: "0")
            return 55
        }
    }

    /// Lowercase hex only, as the specification requires.
    private static func hex(_ digits: ArraySlice<UInt8>) -> UInt64? {
        var value: UInt64 = 0
        for digit in digits {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = value << 4 | UInt64(digit - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = value << 4 | UInt64(digit - UInt8(ascii: "a") + 10)
            default: return nil
            }
        }
        return value
    }
}
