import Foundation
import TracegateTrace

/// The trace file: one `TraceRecord` as a JSON object per line, appended as traces finish.
/// A line is written whole with one `write`, so a crash can lose at most the line being written.
public final class TraceFileWriter: @unchecked Sendable {
    private let fd: Int32
    private let encoder = JSONEncoder()
    private let lock = NSLock()
    public let path: String

    public init(path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, "reason": String(cString: strerror(errno))])
        }
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    }

    deinit { close(fd) }

    public func append(_ record: TraceRecord) throws {
        var line = try encoder.encode(record)
        line.append(UInt8(ascii: "\n"))
        try lock.withLock {
            if let code = writeFully(fd, line) {
                throw CocoaError(.fileWriteUnknown, userInfo: ["reason": describeErrno(code)])
            }
        }
    }
}

/// Reads a trace file back.
public enum TraceFileReader {
    /// The records of `path`, and the numbers of lines that are not records (reported, not fatal).
    public static func read(path: String) throws -> (records: [TraceRecord], badLines: [Int]) {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let decoder = JSONDecoder()
        var records: [TraceRecord] = []
        var badLines: [Int] = []
        for (index, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
            if let record = try? decoder.decode(TraceRecord.self, from: Data(line)) {
                records.append(record)
            } else {
                badLines.append(index + 1)
            }
        }
        return (records, badLines)
    }
}
