import Foundation
import TracegateTrace

#if canImport(Glibc)
import Glibc
#endif

/// The trace file: one `TraceRecord` as a JSON object per line, appended as traces finish.
///
/// Bounded on disk: once the file would pass `maxBytes`, it is renamed `PATH.1` (an older `PATH.1`
/// becomes `PATH.2`, and so on up to `PATH.KEEP`; the oldest is deleted) and a new file is started,
/// so the files take at most `maxBytes × (keep + 1)` (a line longer than `maxBytes` takes a file of
/// its own). A group of lines that does not fit is cut at a line: what fits fills the file, the rest
/// starts the next. Every write holds whole lines, so no line is ever split between files or lost by
/// rotating; a crash can lose at most the lines of the write under way. `tracegate push` takes the rotated files too.
/// (`@unchecked Sendable`: `fd` and `size` change only under `lock`.)
public final class TraceFileWriter: @unchecked Sendable {
    public let path: String
    public let maxBytes: Int
    public let keep: Int
    private var fd: Int32
    private var size: Int
    private let lock = NSLock()

    /// `keep` is at least 1 when `maxBytes` is finite: rotating never deletes the file just written.
    public init(path: String, maxBytes: Int = .max, keep: Int = 1) throws {
        precondition(keep >= 1, "a rotated trace file needs somewhere to go")
        self.path = path
        self.maxBytes = maxBytes
        self.keep = keep
        fd = try Self.open(path)
        var status = stat()
        size = fstat(fd, &status) == 0 ? Int(status.st_size) : 0
    }

    deinit { close(fd) }

    /// Appends one trace.
    public func append(_ record: TraceRecord) throws {
        try write(lines: TraceRecordJSON.line(record))
    }

    /// Appends whole lines (each ending in a newline): as many as fit within `maxBytes` go to the
    /// file with one write, then it rotates and the rest go to the next (so a group of lines fills
    /// each file rather than leaving it part empty). A line longer than `maxBytes` gets a file to
    /// itself. Returns the bytes of the oldest rotated files this write deleted to stay within
    /// `keep` files, else 0.
    @discardableResult
    public func write(lines: [UInt8]) throws -> Int {
        guard !lines.isEmpty else { return 0 }
        return try lock.withLock {
            var deleted = 0
            var start = 0
            while start < lines.count {
                let end = Self.endOfLinesFitting(lines, from: start, room: maxBytes - size, fileIsEmpty: size == 0)
                if end == start {
                    deleted += try rotate()
                    continue
                }
                if let code = writeFully(fd, lines[start..<end]) {
                    throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, "reason": describeErrno(code)])
                }
                size += end - start
                start = end
            }
            return deleted
        }
    }

    /// Where the whole lines of `lines[start...]` that fit in `room` bytes end; `start` when none
    /// does, except into an empty file, which takes the first line whatever its length.
    static func endOfLinesFitting(_ lines: [UInt8], from start: Int, room: Int, fileIsEmpty: Bool) -> Int {
        if room >= lines.count - start { return lines.count }
        if room > 0, let newline = lines[start..<(start + room)].lastIndex(of: UInt8(ascii: "\n")) { return newline + 1 }
        guard fileIsEmpty else { return start }
        return lines[start...].firstIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? lines.count
    }

    /// The rotated files' names, newest first: `PATH.1` … `PATH.KEEP`.
    public static func rotatedPaths(of path: String, keep: Int) -> [String] {
        (1...max(1, keep)).map { "\(path).\($0)" }
    }

    /// Renames the file and its rotated files one step older; returns the bytes of the file deleted.
    private func rotate() throws -> Int {
        let rotated = Self.rotatedPaths(of: path, keep: keep)
        var deleted = 0
        if let oldest = rotated.last {
            var status = stat()
            if stat(oldest, &status) == 0 { deleted = Int(status.st_size) }
            unlink(oldest)
        }
        for (older, newer) in zip(rotated.dropFirst(), rotated).reversed() { rename(newer, older) }
        rename(path, rotated[0])
        let next = try Self.open(path)
        close(fd)
        fd = next
        size = 0
        return deleted
    }

    private static func open(_ path: String) throws -> Int32 {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, "reason": String(cString: strerror(errno))])
        }
        return fd
    }
}
