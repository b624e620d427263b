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
public final class AccessLog: ExchangeObserver {
    let format: AccessLogFormat
    let writer: LineWriter
    /// Where this instance's lines go: the event loop's own buffer (nil: the writer's shared one).
    private let source: LineWriter.Source?
    private let scratch = Scratch()

    /// What an instance reuses from line to line; each event loop has an instance of its own
    /// (`forEventLoop`), so it is never shared.
    final class Scratch: @unchecked Sendable {
        var line = ByteBuffer()
        var clock = TimestampCache()
    }

    public convenience init(format: AccessLogFormat, writer: LineWriter) {
        self.init(format: format, writer: writer, source: nil)
    }

    private init(format: AccessLogFormat, writer: LineWriter, source: LineWriter.Source?) {
        self.format = format
        self.writer = writer
        self.source = source
    }

    /// An instance with scratch space and a buffer of its own, writing to the same `LineWriter`.
    public func forEventLoop(_ eventLoop: EventLoop) -> ExchangeObserver {
        AccessLog(format: format, writer: writer, source: writer.makeSource())
    }

    public func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {
        scratch.line.clear()
        Self.write(summary, format: format, into: &scratch.line, clock: &scratch.clock)
        scratch.line.withUnsafeReadableBytes { line in
            if let source { source.append(line) } else { writer.append(line) }
        }
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
        line.writeDecimal(max(0, s.tunnel?.bytesFromClient ?? s.requestBodyBytes))
        line.writeStaticString(" out=")
        line.writeDecimal(max(0, s.tunnel?.bytesFromUpstream ?? s.responseBodyBytes))
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
        line.writeDecimal(max(0, s.tunnel?.bytesFromClient ?? s.requestBodyBytes))
        line.writeStaticString(",\"bytes_out\":")
        line.writeDecimal(max(0, s.tunnel?.bytesFromUpstream ?? s.responseBodyBytes))
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
