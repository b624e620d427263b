import Foundation
import TracegateTrace

/// Why the spool cannot be used.
public struct SpoolError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }

    static func system(_ what: String, _ path: String) -> SpoolError {
        SpoolError("\(what) \(path): \(String(cString: strerror(errno)))")
    }
}

/// A record kept in a `DiskSpool`: one JSON line each.
public protocol SpoolRecord: Codable, Sendable {
    /// Appends the record's JSON and a newline.
    static func appendLine(_ record: Self, to data: inout [UInt8])
}

extension TraceRecord: SpoolRecord {
    public static func appendLine(_ record: TraceRecord, to data: inout [UInt8]) { TraceRecordJSON.appendLine(record, to: &data) }
}

extension Feedback: SpoolRecord {
    public static func appendLine(_ record: Feedback, to data: inout [UInt8]) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        data += (try? encoder.encode(record)) ?? Data()
        data.append(UInt8(ascii: "\n"))
    }
}

/// The spool of traces.
public typealias TraceSpool = DiskSpool<TraceRecord>

/// An on-disk FIFO of records not yet delivered: segment files of JSON lines in one directory
/// (for traces, the trace file's format, so `tracegate push` can send a segment by hand), read from a
/// persisted cursor, oldest first.
///
/// Durability: every `append` reaches the kernel with `write(2)` before it returns, so a crash of
/// the process (`kill -9`) loses nothing already appended. `fsync` runs at most once per
/// `fsyncInterval`, when a segment is closed and at `close()`, so a power loss can lose the last
/// interval. The cursor (what was delivered) is saved after every acknowledgement; after a crash
/// at most the batch in flight is sent again, which MLflow takes as an upsert.
///
/// Bounded: beyond `maxBytes` the oldest segment is deleted and its traces counted as dropped.
/// One process at a time: the directory is locked (`flock`) while open.
/// (`@unchecked Sendable`: its mutable state changes only under `lock`.)
public final class DiskSpool<Record: SpoolRecord>: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var directory: String
        public var maxBytes: Int
        /// A segment is closed (and a new one started) past this size.
        public var segmentBytes: Int
        public var fsyncInterval: Duration

        public init(directory: String, maxBytes: Int = 1 << 30, segmentBytes: Int? = nil, fsyncInterval: Duration = .seconds(1)) {
            self.directory = directory
            self.maxBytes = maxBytes
            self.segmentBytes = segmentBytes ?? max(64 << 10, min(8 << 20, maxBytes / 8))
            self.fsyncInterval = fsyncInterval
        }
    }

    /// Records read from the spool, to acknowledge once delivered (or set aside).
    public struct Batch: Sendable {
        public let records: [Record]
        /// Lines that could not be decoded (a torn write after a power loss); skipped.
        public let unreadableLines: Int
        fileprivate let segment: UInt64
        fileprivate let endOffset: Int
        fileprivate let lineCount: Int
    }

    private struct Segment {
        let sequence: UInt64
        var bytes: Int
        var lines: Int
    }

    public let configuration: Configuration
    private let lock = NSLock()
    private let lockFD: Int32
    private var segments: [Segment] = []
    private var writeFD: Int32 = -1
    /// Read position in `segments[0]`.
    private var readOffset = 0
    private var readLines = 0
    private var lastSync = ContinuousClock.now
    private var droppedTraces = 0

    private var cursorPath: String { configuration.directory + "/cursor" }
    private func segmentPath(_ sequence: UInt64) -> String {
        configuration.directory + "/" + Self.segmentName(sequence)
    }
    static func segmentName(_ sequence: UInt64) -> String {
        let digits = String(sequence)
        return "segment-" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".jsonl"
    }

    /// Opens (creating it if needed) and locks the spool directory, and finds what an earlier run left.
    public init(configuration: Configuration) throws {
        self.configuration = configuration
        let directory = configuration.directory
        if mkdir(directory, 0o700) != 0 && errno != EEXIST { throw SpoolError.system("cannot create the spool directory", directory) }
        lockFD = open(directory + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else { throw SpoolError.system("cannot open the lock file in", directory) }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            close(lockFD)
            throw SpoolError("the spool directory \(directory) is in use by another tracegate process; give each process its own spool_dir")
        }
        do {
            try recover()
        } catch {
            close(lockFD)
            throw error
        }
    }

    deinit {
        if writeFD >= 0 { close(writeFD) }
        close(lockFD)
    }

    // MARK: - State

    /// Records appended and not yet acknowledged.
    public var recordCount: Int { lock.withLock { segments.reduce(0) { $0 + $1.lines } - readLines } }
    /// Bytes on disk in segment files.
    public var byteCount: Int { lock.withLock { segments.reduce(0) { $0 + $1.bytes } } }
    public var isEmpty: Bool { recordCount == 0 }
    /// Records deleted unread because the spool was full.
    public var dropped: Int { lock.withLock { droppedTraces } }

    // MARK: - Writing

    /// Appends records in order. Returns how many older records were dropped to stay within `maxBytes`.
    @discardableResult
    public func append(_ records: [Record]) throws -> Int {
        guard !records.isEmpty else { return 0 }
        var data: [UInt8] = []
        for record in records { Record.appendLine(record, to: &data) }
        return try lock.withLock {
            if let last = segments.last, last.bytes > 0, last.bytes + data.count > configuration.segmentBytes {
                try startSegment(last.sequence + 1)
            }
            let written = segments[segments.count - 1].bytes
            if let code = writeFully(writeFD, data) {
                // A disk full mid-write leaves part of the lines: cut them, so the file stays whole lines
                // and its size stays the one recorded.
                ftruncate(writeFD, off_t(written))
                throw SpoolError("cannot write \(segmentPath(segments[segments.count - 1].sequence)): \(describeErrno(code))")
            }
            segments[segments.count - 1].bytes += data.count
            segments[segments.count - 1].lines += records.count
            let dropped = enforceCap()
            if ContinuousClock.now - lastSync >= configuration.fsyncInterval { syncLocked() }
            return dropped
        }
    }

    /// Flushes everything to stable storage (at shutdown).
    public func sync() { lock.withLock { syncLocked() } }

    private func syncLocked() {
        if writeFD >= 0 { fsync(writeFD) }
        let directoryFD = open(configuration.directory, O_RDONLY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
        lastSync = .now
    }

    /// Closes the current segment and opens a new, empty one.
    private func startSegment(_ sequence: UInt64) throws {
        if writeFD >= 0 {
            fsync(writeFD)
            close(writeFD)
            lastSync = .now
        }
        let path = segmentPath(sequence)
        writeFD = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard writeFD >= 0 else { throw SpoolError.system("cannot create spool segment", path) }
        segments.append(Segment(sequence: sequence, bytes: 0, lines: 0))
    }

    /// Deletes the oldest segments while over the cap (never the one being written).
    private func enforceCap() -> Int {
        var dropped = 0
        while segments.count > 1 && segments.reduce(0, { $0 + $1.bytes }) > configuration.maxBytes {
            let oldest = segments.removeFirst()
            dropped += oldest.lines - readLines
            readOffset = 0
            readLines = 0
            unlink(segmentPath(oldest.sequence))
            saveCursor()
        }
        droppedTraces += dropped
        return dropped
    }

    // MARK: - Reading

    /// Up to `max` of the oldest unacknowledged records; nil when the spool is empty.
    /// Reading does not consume: call `acknowledge` once the batch is delivered.
    public func peek(max: Int) -> Batch? {
        lock.withLock {
            while let first = segments.first {
                if readOffset < first.bytes {
                    return readBatch(from: first, max: max)
                }
                guard segments.count > 1 else { return nil }
                // The oldest segment is read out and a newer one exists: it is done.
                segments.removeFirst()
                unlink(segmentPath(first.sequence))
                readOffset = 0
                readLines = 0
                saveCursor()
            }
            return nil
        }
    }

    /// Marks a batch from `peek` as delivered (or set aside): it will not be read again.
    public func acknowledge(_ batch: Batch) {
        lock.withLock {
            guard let first = segments.first, first.sequence == batch.segment, batch.endOffset > readOffset else { return }
            readOffset = batch.endOffset
            readLines += batch.lineCount
            if readOffset >= first.bytes && segments.count > 1 {
                segments.removeFirst()
                unlink(segmentPath(first.sequence))
                readOffset = 0
                readLines = 0
            }
            saveCursor()
        }
    }

    private func readBatch(from segment: Segment, max: Int) -> Batch? {
        let path = segmentPath(segment.sequence)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var traces: [Record] = []
        var unreadable = 0
        var lines = 0
        var offset = readOffset
        var chunkSize = 1 << 20
        let decoder = JSONDecoder()
        while traces.count + unreadable < max && offset < segment.bytes {
            let want = min(chunkSize, segment.bytes - offset)
            var buffer = [UInt8](repeating: 0, count: want)
            let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(offset)) }
            guard got > 0 else { break }
            let bytes = buffer[0..<got]
            var lineStart = bytes.startIndex
            var consumedAny = false
            while traces.count + unreadable < max, let newline = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = bytes[lineStart..<newline]
                if let trace = try? decoder.decode(Record.self, from: Data(line)) {
                    traces.append(trace)
                } else {
                    unreadable += 1
                }
                lines += 1
                lineStart = newline + 1
                consumedAny = true
            }
            offset += lineStart - bytes.startIndex
            if !consumedAny {
                if offset + got >= segment.bytes {
                    // A last line without its newline: a write torn by a power loss. Skip it.
                    unreadable += 1
                    lines += 1
                    offset = segment.bytes
                } else {
                    chunkSize *= 2  // one trace larger than the chunk
                }
            }
        }
        guard lines > 0 else { return nil }
        return Batch(records: traces, unreadableLines: unreadable, segment: segment.sequence, endOffset: offset, lineCount: lines)
    }

    // MARK: - Recovery and the cursor

    /// Finds the segments an earlier run left, and where its reading stopped.
    private func recover() throws {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: configuration.directory) else {
            throw SpoolError.system("cannot list the spool directory", configuration.directory)
        }
        let sequences = names.compactMap { name -> UInt64? in
            guard name.hasPrefix("segment-"), name.hasSuffix(".jsonl") else { return nil }
            return UInt64(name.dropFirst("segment-".count).dropLast(".jsonl".count))
        }.sorted()
        for sequence in sequences {
            let path = segmentPath(sequence)
            guard let data = FileManager.default.contents(atPath: path) else { throw SpoolError.system("cannot read", path) }
            var lines = data.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
            if let last = data.last, last != UInt8(ascii: "\n") { lines += 1 }
            segments.append(Segment(sequence: sequence, bytes: data.count, lines: lines))
        }
        if let cursor = try? String(contentsOfFile: cursorPath, encoding: .utf8) {
            let parts = cursor.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if parts.count == 3, let first = segments.first, UInt64(parts[0]) == first.sequence, parts[1] <= first.bytes {
                readOffset = parts[1]
                readLines = min(parts[2], first.lines)
            }
        }
        try startSegment((segments.last?.sequence ?? 0) + 1)
    }

    /// Saves the read position (write to a temporary file, then rename over the old one).
    private func saveCursor() {
        let text = "\(segments.first?.sequence ?? 0) \(readOffset) \(readLines)\n"
        let temporary = cursorPath + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let failed = writeFully(fd, Array(text.utf8)) != nil
        close(fd)
        // A cursor that could not be written whole keeps the previous one: at worst a batch is sent again.
        if failed { unlink(temporary) } else { rename(temporary, cursorPath) }
    }
}
