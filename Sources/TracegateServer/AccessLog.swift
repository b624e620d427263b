import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TracegateConfig
import TracegateProxy
import TracegateTrace

/// One access-log line per exchange, in text or JSON, written to standard output.
public struct AccessLog: ExchangeObserver {
    let format: AccessLogFormat
    let writer: LineWriter

    public init(format: AccessLogFormat, writer: LineWriter) {
        self.format = format
        self.writer = writer
    }

    public func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {
        writer.append(format == .json ? Self.json(summary) : Self.text(summary))
    }

    /// `2026-11-25T10:00:00.123Z 127.0.0.1 "GET /v1/models" 200 in=0 out=512 1.234ms id=… [outcome]`
    static func text(_ s: ExchangeSummary) -> String {
        var line = "\(timestamp(s.startedAtEpochNanos)) \(s.clientAddress ?? "-") \"\(s.method.rawValue) \(QueryRedaction.target(s.target))\" "
        line += s.status.map(String.init) ?? "-"
        line += " in=\(s.requestBodyBytes) out=\(s.responseBodyBytes) \(milliseconds(s.duration))ms id=\(s.requestID)"
        if s.outcome != .completed { line += " outcome=\(outcomeName(s.outcome))" }
        return line + "\n"
    }

    static func json(_ s: ExchangeSummary) -> String {
        var fields: [(String, String)] = [
            ("time", quoted(timestamp(s.startedAtEpochNanos))),
            ("client", quoted(s.clientAddress ?? "")),
            ("method", quoted(s.method.rawValue)),
            ("path", quoted(QueryRedaction.target(s.target))),
            ("status", s.status.map(String.init) ?? "null"),
            ("bytes_in", String(s.requestBodyBytes)),
            ("bytes_out", String(s.responseBodyBytes)),
            ("duration_ms", milliseconds(s.duration)),
            ("request_id", quoted(s.requestID)),
            ("outcome", quoted(outcomeName(s.outcome))),
        ]
        if case .rejected(let why) = s.outcome { fields.append(("error", quoted(why))) }
        if case .upstreamFailed(let why) = s.outcome { fields.append(("error", quoted(why))) }
        if case .upstreamTimeout(let why) = s.outcome { fields.append(("error", quoted(why))) }
        if let ttfb = s.timeToFirstByte { fields.append(("ttfb_ms", milliseconds(ttfb))) }
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}\n"
    }

    static func outcomeName(_ outcome: ExchangeOutcome) -> String {
        switch outcome {
        case .completed: return "completed"
        case .rejected: return "rejected"
        case .upstreamFailed: return "upstream_failed"
        case .upstreamTimeout: return "upstream_timeout"
        case .clientAborted: return "client_aborted"
        }
    }

    static func milliseconds(_ amount: TimeAmount) -> String {
        let micros = amount.nanoseconds / 1000
        let whole = micros / 1000
        let frac = micros % 1000
        return "\(whole)." + String(repeating: "0", count: 3 - String(frac).count) + String(frac)
    }

    static func quoted(_ value: String) -> String {
        var buffer = ByteBuffer()
        buffer.writeJSONString(value)
        return String(buffer: buffer)
    }

    /// RFC 3339 UTC with milliseconds.
    static func timestamp(_ epochNanos: Int64) -> String {
        var seconds = time_t(epochNanos / 1_000_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let millis = Int((epochNanos / 1_000_000) % 1000)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
    }
}

/// Buffers lines from many threads and writes them to a file descriptor in batches: every 100 ms,
/// when 64 KiB are waiting, and on `flush()`. Holds at most 8 MiB; beyond that lines are counted
/// as dropped rather than letting a blocked stdout grow memory.
/// (`@unchecked`: the only non-Sendable member is the timer, which is set up once in `init`.)
public final class LineWriter: @unchecked Sendable {
    private struct State {
        var pending: [UInt8] = []
        var dropped = 0
    }

    private let fd: Int32
    private let state = NIOLockedValueBox(State())
    private let writeLock = NIOLock()
    private let timer: DispatchSourceTimer
    private static let batchBytes = 64 * 1024
    private static let maxPendingBytes = 8 * 1024 * 1024

    public init(fd: Int32 = STDOUT_FILENO) {
        self.fd = fd
        self.timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "tracegate.access-log"))
        timer.schedule(deadline: .now() + .milliseconds(100), repeating: .milliseconds(100))
        timer.setEventHandler { [weak self] in self?.flush() }
        timer.resume()
    }

    deinit { timer.cancel() }

    public func append(_ line: String) {
        let full: Bool = state.withLockedValue { state in
            if state.pending.count + line.utf8.count > Self.maxPendingBytes {
                state.dropped += 1
                return false
            }
            state.pending.append(contentsOf: line.utf8)
            return state.pending.count >= Self.batchBytes
        }
        if full { flush() }
    }

    /// Lines dropped because output could not keep up.
    public var droppedLines: Int { state.withLockedValue { $0.dropped } }

    public func flush() {
        writeLock.withLock {
            let bytes: [UInt8] = state.withLockedValue { state in
                let bytes = state.pending
                state.pending.removeAll(keepingCapacity: true)
                return bytes
            }
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n <= 0 {
                        if n < 0 && errno == EINTR { continue }
                        return
                    }
                    offset += n
                }
            }
        }
    }
}
