import Foundation
import NIOCore
import NIOPosix
import TracegateConfig
import TracegateProxy
import TracegateTrace

/// RFC 3339 UTC timestamps with milliseconds (`2026-11-25T10:00:00.123Z`); the part up to the
/// seconds is formatted once per second and reused.
struct TimestampCache {
    private var second: Int64 = .min
    /// `2026-11-25T10:00:00.` for `second`.
    private var prefix: [UInt8] = []

    mutating func write(_ epochNanos: Int64, into line: inout ByteBuffer) {
        let (wholeSeconds, nanos) = epochNanos.quotientAndRemainder(dividingBy: 1_000_000_000)
        let seconds = nanos < 0 ? wholeSeconds - 1 : wholeSeconds
        if seconds != second {
            second = seconds
            prefix = Self.format(seconds)
        }
        line.writeBytes(prefix)
        let millis = Int((epochNanos - seconds * 1_000_000_000) / 1_000_000)
        if millis < 100 { line.writeStaticString("0") }
        if millis < 10 { line.writeStaticString("0") }
        line.writeDecimal(millis)
        line.writeStaticString("Z")
    }

    private static func format(_ seconds: Int64) -> [UInt8] {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        var text: [UInt8] = []
        text.reserveCapacity(20)
        func digits(_ value: Int32, _ width: Int) {
            var divisor: Int32 = 1
            for _ in 1..<width { divisor *= 10 }
            var rest = max(0, value)
            while divisor > 0 {
                text.append(UInt8(ascii: "0") + UInt8((rest / divisor) % 10))
                rest %= divisor
                divisor /= 10
            }
        }
        digits(parts.tm_year + 1900, 4)
        text.append(UInt8(ascii: "-"))
        digits(parts.tm_mon + 1, 2)
        text.append(UInt8(ascii: "-"))
        digits(parts.tm_mday, 2)
        text.append(UInt8(ascii: "T"))
        digits(parts.tm_hour, 2)
        text.append(UInt8(ascii: ":"))
        digits(parts.tm_min, 2)
        text.append(UInt8(ascii: ":"))
        digits(parts.tm_sec, 2)
        text.append(UInt8(ascii: "."))
        return text
    }
}
