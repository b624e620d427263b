import NIOCore

/// The durations reported in a `Server-Timing` response header (W3C Server Timing).
struct ServerTiming: Equatable {
    /// The proxy's own time: from the request head's arrival until it was handed upstream, less `connect`.
    var proxy: TimeAmount
    /// Opening a new upstream connection; nil when a pooled one was used.
    var connect: TimeAmount?
    /// From the request handed upstream to the upstream's response head.
    var upstream: TimeAmount

    /// `Server-Timing: tracegate;dur=0.041, connect;dur=0.310, upstream;dur=12.502` (milliseconds).
    func write(into out: inout ByteBuffer) {
        out.writeStaticString("Server-Timing: tracegate;dur=")
        Self.writeMilliseconds(proxy, into: &out)
        if let connect {
            out.writeStaticString(", connect;dur=")
            Self.writeMilliseconds(connect, into: &out)
        }
        out.writeStaticString(", upstream;dur=")
        Self.writeMilliseconds(upstream, into: &out)
        out.writeStaticString("\r\n")
    }

    /// Milliseconds with three decimals, written without formatting a string.
    static func writeMilliseconds(_ amount: TimeAmount, into out: inout ByteBuffer) {
        let micros = max(0, amount.nanoseconds) / 1_000
        out.writeDecimal(Int(micros / 1_000))
        out.writeInteger(UInt8(ascii: "."))
        let fraction = micros % 1_000
        out.writeInteger(UInt8(ascii: "0") + UInt8(fraction / 100))
        out.writeInteger(UInt8(ascii: "0") + UInt8(fraction / 10 % 10))
        out.writeInteger(UInt8(ascii: "0") + UInt8(fraction % 10))
    }
}
