import Foundation
import TracegateTrace

#if canImport(Glibc)
import Glibc
#endif

/// The trace file: one `TraceRecord` as a JSON object per line, appended as traces finish.
///
/// Bounded on disk: once the file would pass `maxBytes`, it is renamed `PATH.1` (an older `PATH.1`
/// becomes `PATH.2`, and so on up to `PATH.KEEP`; the oldest is deleted) and a new file is started,
/// so the files take at most `maxBytes × (keep + 1)`. Rotation happens between writes, and every
/// write holds whole lines, so no line is ever split between files or lost by rotating; a crash can
/// lose at most the lines of the write under way. `tracegate push` takes the rotated files too.
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

    /// Appends whole lines (each ending in a newline) with one write, after rotating if they would
    /// take the file past `maxBytes`. Returns the size of the oldest rotated file when this write
    /// deleted it to stay within `keep` files, else 0.
    @discardableResult
    public func write(lines: [UInt8]) throws -> Int {
        guard !lines.isEmpty else { return 0 }
        return try lock.withLock {
            var deleted = 0
            if size > 0 && size + lines.count > maxBytes { deleted = try rotate() }
            if let code = writeFully(fd, lines) {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, "reason": describeErrno(code)])
            }
            size += lines.count
            return deleted
        }
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
