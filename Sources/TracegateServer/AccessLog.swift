import Foundation
import NIOCore
import NIOPosix
import TracegateConfig
import TracegateProxy
import TracegateTrace

/// One access-log line per exchange, in text or JSON, written to standard output.
///
/// A line is written on the exchange's event loop, so it costs about what nginx's does: bytes go
/// straight into a buffer that thread reuses (no strings are built), the date part of the timestamp
/// is formatted once per second per thread, and the finished line is copied into the `LineWriter`,
/// which writes to the file descriptor off the event loops.
public struct AccessLog: ExchangeObserver {
    let format: AccessLogFormat
    let writer: LineWriter
    private let scratch = ThreadSpecificVariable<Scratch>()

    /// What an event-loop thread reuses from line to line: one per thread (a thread-specific
    /// variable), so never shared.
    final class Scratch: @unchecked Sendable {
        var line = ByteBuffer()
        var clock = TimestampCache()
    }

    public init(format: AccessLogFormat, writer: LineWriter) {
        self.format = format
        self.writer = writer
    }

    public func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {
        let scratch: Scratch
        if let existing = self.scratch.currentValue {
            scratch = existing
        } else {
            scratch = Scratch()
            self.scratch.currentValue = scratch
        }
        scratch.line.clear()
        Self.write(summary, format: format, into: &scratch.line, clock: &scratch.clock)
        scratch.line.withUnsafeReadableBytes { writer.append($0) }
    }

    /// Writes the line for `s`, newline included.
    static func write(_ s: ExchangeSummary, format: AccessLogFormat, into line: inout ByteBuffer, clock: inout TimestampCache) {
        if format == .json {
            json(s, into: &line, clock: &clock)
        } else {
            text(s, into: &line, clock: &clock)
        }
    }

    /// `2026-11-25T10:00:00.123Z 127.0.0.1 "GET /v1/models" 200 in=0 out=512 1.234ms id=… [outcome=…]`
    static func text(_ s: ExchangeSummary, into line: inout ByteBuffer, clock: inout TimestampCache) {
        clock.write(s.startedAtEpochNanos, into: &line)
        line.writeStaticString(" ")
        line.writeString(s.clientAddress ?? "-")
        line.writeStaticString(" \"")
        line.writeString(s.method.rawValue)
        line.writeStaticString(" ")
        line.writeString(QueryRedaction.target(s.target))
        line.writeStaticString("\" ")
        if let status = s.status { line.writeDecimal(max(0, status)) } else { line.writeStaticString("-") }
        line.writeStaticString(" in=")
        line.writeDecimal(max(0, s.requestBodyBytes))
        line.writeStaticString(" out=")
        line.writeDecimal(max(0, s.responseBodyBytes))
        line.writeStaticString(" ")
        milliseconds(s.duration, into: &line)
        line.writeStaticString("ms id=")
        line.writeString(s.requestID)
        if s.outcome != .completed {
            line.writeStaticString(" outcome=")
            line.writeStaticString(outcomeName(s.outcome))
        }
        line.writeStaticString("\n")
    }

    static func json(_ s: ExchangeSummary, into line: inout ByteBuffer, clock: inout TimestampCache) {
        line.writeStaticString("{\"time\":\"")
        clock.write(s.startedAtEpochNanos, into: &line)
        line.writeStaticString("\",\"client\":")
        line.writeJSONString(s.clientAddress ?? "")
        line.writeStaticString(",\"method\":")
        line.writeJSONString(s.method.rawValue)
        line.writeStaticString(",\"path\":")
        line.writeJSONString(QueryRedaction.target(s.target))
        line.writeStaticString(",\"status\":")
        if let status = s.status { line.writeDecimal(max(0, status)) } else { line.writeStaticString("null") }
        line.writeStaticString(",\"bytes_in\":")
        line.writeDecimal(max(0, s.requestBodyBytes))
        line.writeStaticString(",\"bytes_out\":")
        line.writeDecimal(max(0, s.responseBodyBytes))
        line.writeStaticString(",\"duration_ms\":")
        milliseconds(s.duration, into: &line)
        line.writeStaticString(",\"request_id\":")
        line.writeJSONString(s.requestID)
        line.writeStaticString(",\"outcome\":\"")
        line.writeStaticString(outcomeName(s.outcome))
        line.writeStaticString("\"")
        switch s.outcome {
        case .rejected(let why), .upstreamFailed(let why), .upstreamTimeout(let why):
            line.writeStaticString(",\"error\":")
            line.writeJSONString(why)
        case .completed, .clientAborted:
            break
        }
        if let ttfb = s.timeToFirstByte {
            line.writeStaticString(",\"ttfb_ms\":")
            milliseconds(ttfb, into: &line)
        }
        line.writeStaticString("}\n")
    }

    static func outcomeName(_ outcome: ExchangeOutcome) -> StaticString {
        switch outcome {
        case .completed: return "completed"
        case .rejected: return "rejected"
        case .upstreamFailed: return "upstream_failed"
        case .upstreamTimeout: return "upstream_timeout"
        case .clientAborted: return "client_aborted"
        }
    }

    /// `1.234`: milliseconds with three decimals.
    static func milliseconds(_ amount: TimeAmount, into line: inout ByteBuffer) {
        let micros = max(0, Int(amount.nanoseconds / 1000))
        line.writeDecimal(micros / 1000)
        line.writeStaticString(".")
        let fraction = micros % 1000
        if fraction < 100 { line.writeStaticString("0") }
        if fraction < 10 { line.writeStaticString("0") }
        line.writeDecimal(fraction)
    }
}

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
