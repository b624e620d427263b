import Foundation
import TracegateTrace

/// Records the tracking server refused (or that can never be delivered), kept with the reason
/// instead of retried forever: one JSON object per line, `{"rejected_at": …, "reason": …, "record": {…}}`.
/// With `maxBytes`, an entry that would take the file past it is not written (the caller logs it).
/// (`@unchecked Sendable`: it has no mutable state; appends are serialised by `lock`.)
public final class DeadLetterFile: @unchecked Sendable {
    public let path: String
    public let maxBytes: Int?
    private let lock = NSLock()

    public init(path: String, maxBytes: Int? = nil) {
        self.path = path
        self.maxBytes = maxBytes
    }

    private struct Entry<Record: Encodable>: Encodable {
        var rejected_at: String
        var reason: String
        var record: Record
    }

    public func append<Record: Encodable>(_ record: Record, reason: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let stamp = ISO8601DateFormatter().string(from: Date())
        var line = try encoder.encode(Entry(rejected_at: stamp, reason: reason, record: record))
        line.append(UInt8(ascii: "\n"))
        try lock.withLock {
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SpoolError.system("cannot open", path) }
            defer { close(fd) }
            if let maxBytes {
                var status = stat()
                if fstat(fd, &status) == 0, Int(status.st_size) + line.count > maxBytes {
                    throw SpoolError("\(path) is full (\(maxBytes) bytes)")
                }
            }
            if let code = writeFully(fd, line) { throw SpoolError("cannot write \(path): \(describeErrno(code))") }
        }
    }
}
