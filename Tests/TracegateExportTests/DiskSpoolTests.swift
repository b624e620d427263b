import Foundation
import XCTest

@testable import TracegateExport
@testable import TracegateTrace

final class DiskSpoolTests: XCTestCase {
    private var directory = ""

    override func setUp() {
        directory = NSTemporaryDirectory() + "tracegate-spool-test-\(UUID().uuidString)"
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func record(_ n: UInt64) -> TraceRecord {
        TraceRecord(
            traceID: TraceID(high: 2, low: n), rootSpanID: SpanID(value: n), name: "POST /\(n)",
            startTimeUnixNano: 1_700_000_000_000_000_000 + n, endTimeUnixNano: 1_700_000_000_100_000_000 + n,
            inputs: String(repeating: "x", count: 200), user: "user-\(n)", clientRequestID: "req-\(n)")
    }

    private func spool(maxBytes: Int = 1 << 30, segmentBytes: Int = 4096) throws -> TraceSpool {
        try TraceSpool(configuration: .init(directory: directory, maxBytes: maxBytes, segmentBytes: segmentBytes))
    }

    private func drain(_ spool: TraceSpool, batch: Int = 7) -> [UInt64] {
        var read: [UInt64] = []
        while let next = spool.peek(max: batch) {
            read += next.records.map(\.traceID.low)
            spool.acknowledge(next)
        }
        return read
    }

    func testTracesComeBackInOrderAcrossSegmentsAndOnlyOnce() throws {
        let spool = try spool()
        for n in UInt64(1)...60 { try spool.append([record(n)]) }
        XCTAssertEqual(spool.recordCount, 60)
        XCTAssertGreaterThan(try segmentFiles().count, 3, "a small segment size must rotate")
        XCTAssertEqual(drain(spool), Array(1...60))
        XCTAssertTrue(spool.isEmpty)
        XCTAssertNil(spool.peek(max: 10))
        XCTAssertEqual(try segmentFiles().count, 1, "read segments are deleted")
    }

    func testPeekWithoutAcknowledgeReadsTheSameTracesAgain() throws {
        let spool = try spool()
        try spool.append((1...5).map(record))
        XCTAssertEqual(spool.peek(max: 3)?.records.map(\.traceID.low), [1, 2, 3])
        XCTAssertEqual(spool.peek(max: 3)?.records.map(\.traceID.low), [1, 2, 3])
        XCTAssertEqual(spool.recordCount, 5)
    }

    func testAReopenedSpoolResumesAfterTheLastAcknowledgedBatch() throws {
        do {
            let first = try spool()
            try first.append((1...30).map(record))
            for _ in 0..<2 {
                let batch = try XCTUnwrap(first.peek(max: 4))
                first.acknowledge(batch)
            }
            _ = first.peek(max: 4)  // read but not delivered when the process died
        }
        let second = try spool()
        XCTAssertEqual(second.recordCount, 22)
        XCTAssertEqual(drain(second), Array(9...30))
    }

    func testTheDirectoryIsLockedByTheProcessUsingIt() throws {
        let first = try spool()
        XCTAssertThrowsError(try spool()) { error in
            XCTAssertTrue("\(error)".contains("in use by another tracegate process"), "\(error)")
        }
        _ = first
    }

    func testOverTheCapTheOldestTracesAreDroppedAndCounted() throws {
        let spool = try spool(maxBytes: 16 * 1024, segmentBytes: 4096)
        var dropped = 0
        for n in UInt64(1)...200 { dropped += try spool.append([record(n)]) }
        XCTAssertGreaterThan(dropped, 0)
        XCTAssertEqual(spool.dropped, dropped)
        XCTAssertLessThanOrEqual(spool.byteCount, 16 * 1024 + 4096)
        let left = drain(spool)
        XCTAssertEqual(left.count + dropped, 200, "every trace is either kept or counted as dropped")
        XCTAssertEqual(left, Array(UInt64(201 - left.count)...200), "the newest are kept, in order")
    }

    func testATornLastLineIsSkippedAndReported() throws {
        do {
            let spool = try spool()
            try spool.append([record(1), record(2)])
        }
        let path = try XCTUnwrap(segmentFiles().last.map { directory + "/" + $0 })
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(#"{"record":{"traceID""#.utf8))
        try handle.close()
        let spool = try spool()
        let batch = try XCTUnwrap(spool.peek(max: 10))
        XCTAssertEqual(batch.records.map(\.traceID.low), [1, 2])
        XCTAssertEqual(batch.unreadableLines, 1)
        spool.acknowledge(batch)
        XCTAssertTrue(spool.isEmpty)
    }

    func testSpoolSegmentsUseTheTraceFileFormat() throws {
        let spool = try spool()
        try spool.append([record(1), record(2)])
        let path = try XCTUnwrap(segmentFiles().first.map { directory + "/" + $0 })
        XCTAssertEqual(try TraceFileReader.read(path: path).records, [record(1), record(2)])
    }

    private func segmentFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("segment-") }.sorted()
    }
}

final class LogThrottleTests: XCTestCase {
    func testTheFirstOccurrenceIsLoggedThenAtMostOncePerIntervalWithTheTotal() async throws {
        let throttle = LogThrottle(interval: .milliseconds(200))
        XCTAssertEqual(throttle.record(2), 2)
        XCTAssertNil(throttle.record())
        XCTAssertNil(throttle.record(3))
        try await Task.sleep(for: .milliseconds(250))
        XCTAssertEqual(throttle.record(), 7, "the total since the start")
    }
}
