import Foundation
import NIOConcurrencyHelpers

/// Buffers lines from many threads; `flush()` writes them to a file descriptor in one batch
/// (`AccessLogService` calls it every 100 ms, off the event loops): an event loop only copies its line
/// into memory, so a slow reader of standard output never blocks forwarding. Holds at most 8 MiB;
/// beyond that lines are counted as dropped rather than letting a blocked output grow memory.
/// (`@unchecked`: `spare` is touched only under `writeLock`.)
public final class LineWriter: @unchecked Sendable {
    private struct State {
        var pending: [UInt8] = []
        var dropped = 0
    }

    private let fd: Int32
    private let state = NIOLockedValueBox(State())
    private let writeLock = NIOLock()
    /// What `flush` writes from: swapped with the pending buffer, so appending goes on meanwhile.
    /// Touched only under `writeLock`.
    private var spare: [UInt8] = []
    static let maxPendingBytes = 8 * 1024 * 1024

    public init(fd: Int32 = STDOUT_FILENO) {
        self.fd = fd
    }

    /// Copies whole lines into the buffer.
    public func append(_ line: UnsafeRawBufferPointer) {
        state.withLockedValue { state in
            if state.pending.count + line.count > Self.maxPendingBytes {
                state.dropped += 1
            } else {
                state.pending.append(contentsOf: line)
            }
        }
    }

    public func append(_ line: String) {
        var line = line
        line.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// Lines dropped because output could not keep up.
    public var droppedLines: Int { state.withLockedValue { $0.dropped } }

    /// Writes everything buffered; returns when it is written (or the descriptor failed).
    public func flush() {
        writeLock.withLock {
            state.withLockedValue { state in swap(&spare, &state.pending) }
            defer {
                // Keep the storage for the next swap, unless a burst left it large.
                if spare.capacity > 1 << 20 { spare = [] } else { spare.removeAll(keepingCapacity: true) }
            }
            spare.withUnsafeBytes { raw in
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
