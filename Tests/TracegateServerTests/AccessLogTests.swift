import Foundation
import NIOCore
import TracegateConfig
import XCTest

@testable import TracegateProxy
@testable import TracegateServer

final class AccessLogTests: XCTestCase {
    private func summary(outcome: ExchangeOutcome = .completed, status: Int? = 200) -> ExchangeSummary {
        ExchangeSummary(
            requestID: "req-1", method: .POST, target: "/v1/chat/completions?api_key=s3cret&x=1", clientAddress: "127.0.0.1",
            status: status, requestBodyBytes: 1_024, responseBodyBytes: 493,
            startedAtEpochNanos: 1_764_064_800_123_456_789, duration: .microseconds(1_234),
            timeToFirstByte: .microseconds(1_005), outcome: outcome)
    }

    private func line(_ s: ExchangeSummary, _ format: AccessLogFormat) -> String {
        var buffer = ByteBuffer()
        var clock = TimestampCache()
        AccessLog.write(s, format: format, into: &buffer, clock: &clock)
        return String(buffer: buffer)
    }

    func testTextLine() {
        XCTAssertEqual(
            line(summary(), .text),
            "2025-11-25T10:00:00.123Z 127.0.0.1 \"POST /v1/chat/completions?api_key=[REDACTED]&x=1\" 200 in=1024 out=493 1.234ms id=req-1\n")
        XCTAssertEqual(
            line(summary(outcome: .clientAborted, status: nil), .text),
            "2025-11-25T10:00:00.123Z 127.0.0.1 \"POST /v1/chat/completions?api_key=[REDACTED]&x=1\" - in=1024 out=493 1.234ms id=req-1 outcome=client_aborted\n")
    }

    func testATunnelsLineCountsTheBytesThatPassedEachWay() {
        var tunnel = summary()
        tunnel.status = 101
        tunnel.requestBodyBytes = 0
        tunnel.responseBodyBytes = 0
        tunnel.tunnel = TunnelFigures(bytesFromClient: 300, bytesFromUpstream: 4_000)
        XCTAssertTrue(line(tunnel, .text).contains("\" 101 in=300 out=4000 "), line(tunnel, .text))
        XCTAssertTrue(line(tunnel, .json).contains(#""bytes_in":300,"bytes_out":4000"#), line(tunnel, .json))
    }

    func testJSONLine() throws {
        let text = line(summary(outcome: .upstreamFailed("connect \"refused\"")), .json)
        XCTAssertEqual(
            text,
            #"{"time":"2025-11-25T10:00:00.123Z","client":"127.0.0.1","method":"POST","path":"/v1/chat/completions?api_key=[REDACTED]&x=1","status":200,"bytes_in":1024,"bytes_out":493,"duration_ms":1.234,"request_id":"req-1","outcome":"upstream_failed","error":"connect \"refused\"","ttfb_ms":1.005}"# + "\n")
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        XCTAssertEqual(object?["error"] as? String, "connect \"refused\"")
    }

    func testMillisecondsArePaddedToThreeDecimals() {
        for (micros, expected) in [(0, "0.000"), (7, "0.007"), (70, "0.070"), (1_000, "1.000"), (123_456_789, "123456.789")] {
            var buffer = ByteBuffer()
            AccessLog.milliseconds(.microseconds(Int64(micros)), into: &buffer)
            XCTAssertEqual(String(buffer: buffer), expected)
        }
    }

    /// The cached date part must follow the clock across seconds, days and years.
    func testTimestampCacheMatchesAFreshFormattingEveryTime() {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
        var clock = TimestampCache()
        var nanos: Int64 = 1_798_761_599_000_000_000  // 2026-12-31T23:59:59Z
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            nanos += Int64.random(in: 0..<3_000_000, using: &generator)  // up to 3 ms later: seconds roll over
            var buffer = ByteBuffer()
            clock.write(nanos, into: &buffer)
            let millis = nanos / 1_000_000
            let expected = formatter.string(from: Date(timeIntervalSince1970: Double(millis) / 1000 + 0.0001))
            XCTAssertEqual(String(buffer: buffer), expected)
        }
    }

    func testLineWriterWritesEveryLineWholeFromManyThreadsOnFlush() throws {
        let (path, fd) = try Self.temporaryLog()
        defer { unlink(path) }
        let writer = LineWriter(fd: fd)  // only flush() writes
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for n in 0..<5_000 { writer.append("thread \(thread) line \(n) " + String(repeating: "x", count: n % 50) + "\n") }
        }
        writer.flush()
        close(fd)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 20_000, "nothing lost: flush writes everything buffered")
        for thread in 0..<4 {
            let own = lines.filter { $0.hasPrefix("thread \(thread) ") }
            XCTAssertEqual(own.map { Int($0.split(separator: " ")[3])! }, Array(0..<5_000), "whole lines, in order per thread")
        }
        XCTAssertEqual(writer.droppedLines, 0)
    }

    func testLineWriterDropsAndCountsBeyondItsCap() throws {
        let writer = LineWriter(fd: -1)
        let line = String(repeating: "y", count: (1 << 20) - 13) + "\n"  // 1 MiB with its header
        for _ in 0..<9 { writer.append(line) }
        XCTAssertEqual(writer.droppedLines, 1, "8 MiB buffered at most while output is stuck")
    }

    /// Each event loop's lines go to a buffer of its own: one loop's lines (or its full buffer) never
    /// touch another's, and one flush writes them all, each line whole.
    func testLineWriterSourcesAreFlushedTogetherAndCappedApart() throws {
        let (path, fd) = try Self.temporaryLog()
        defer { unlink(path) }
        let writer = LineWriter(fd: fd)
        let sources = [writer.makeSource(), writer.makeSource()]
        DispatchQueue.concurrentPerform(iterations: 2) { loop in
            for n in 0..<5_000 {
                var line = "loop \(loop) line \(n)\n"
                line.withUTF8 { sources[loop].append(UnsafeRawBufferPointer($0)) }
            }
        }
        writer.append("shared line\n")
        writer.flush()
        close(fd)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 10_001)
        XCTAssertEqual(lines.last, "shared line", "lines come out in the order they were appended")
        for loop in 0..<2 {
            let own = lines.filter { $0.hasPrefix("loop \(loop) ") }
            XCTAssertEqual(own.map { Int($0.split(separator: " ")[3])! }, Array(0..<5_000), "whole lines, in order per loop")
        }

        let stuck = LineWriter(fd: -1)
        let full = stuck.makeSource(), other = stuck.makeSource()  // 8 MiB in two shares
        let megabyte = String(repeating: "z", count: (1 << 20) - 13) + "\n"  // 1 MiB with its header
        for _ in 0..<5 { megabyte.utf8CString.withUnsafeBytes { full.append(UnsafeRawBufferPointer(rebasing: $0.dropLast())) } }
        megabyte.utf8CString.withUnsafeBytes { other.append(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
        XCTAssertEqual(stuck.droppedLines, 1, "only the full share drops; the other loop's still takes lines")
    }

    /// Lines appended in turn to different sources come out in that order, across flushes too.
    func testLineWriterKeepsTheOrderOfLinesAcrossSources() throws {
        let (path, fd) = try Self.temporaryLog()
        defer { unlink(path) }
        let writer = LineWriter(fd: fd)
        let sources = [writer.makeSource(), writer.makeSource(), writer.makeSource()]
        var expected: [String] = []
        for n in 0..<3_000 {
            let line = "line \(n) from \(n * 7 % 3)\n"
            line.utf8CString.withUnsafeBytes { sources[n * 7 % 3].append(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
            expected.append(String(line.dropLast()))
            if n % 1_000 == 999 { writer.flush() }
        }
        close(fd)
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init), expected)
    }

    /// A new file to write a log to, and its descriptor open for writing.
    private static func temporaryLog() throws -> (path: String, fd: Int32) {
        let path = NSTemporaryDirectory() + "tracegate-access-\(UUID().uuidString).log"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return (path, fd)
    }
}
