import Foundation
import NIOConcurrencyHelpers

/// Buffers lines; `flush()` writes them to a file descriptor in one batch (`AccessLogService` calls it
/// every 100 ms, off the event loops): an event loop only copies its line into memory, so a slow
/// reader of standard output never blocks forwarding.
///
/// Each event loop appends to a `Source` of its own (`makeSource()`), whose lock only `flush()` ever
/// takes besides it, for a swap: with one buffer shared by the loops, a loop preempted while holding
/// its lock stalled the other loop's requests for milliseconds. A source holds at most 8 MiB; beyond
/// that its lines are counted as dropped rather than letting a blocked output grow memory.
/// (`@unchecked`: `spare` is touched only under `writeLock`.)
public final class LineWriter: @unchecked Sendable {
    /// One writer's buffer of lines waiting for `flush()`.
    public final class Source: Sendable {
        fileprivate struct State {
            var pending: [UInt8] = []
            var dropped = 0
        }

        fileprivate let state = NIOLockedValueBox(State())

        /// Copies a whole line into the buffer.
        public func append(_ line: UnsafeRawBufferPointer) {
            state.withLockedValue { state in
                if state.pending.count + line.count > LineWriter.maxPendingBytes {
                    state.dropped += 1
                } else {
                    state.pending.append(contentsOf: line)
                }
            }
        }
    }

    private let fd: Int32
    /// For writers that have no source of their own.
    private let shared = Source()
    private let sources = NIOLockedValueBox<[Source]>([])
    private let writeLock = NIOLock()
    /// What `flush` writes from: swapped with a source's pending buffer, so appending goes on meanwhile.
    /// Touched only under `writeLock`.
    private var spare: [UInt8] = []
    static let maxPendingBytes = 8 * 1024 * 1024

    public init(fd: Int32 = STDOUT_FILENO) {
        self.fd = fd
        sources.withLockedValue { $0 = [shared] }
    }

    /// A buffer of its own for one thread (an event loop), flushed with the others.
    public func makeSource() -> Source {
        let source = Source()
        sources.withLockedValue { $0.append(source) }
        return source
    }

    /// Copies a whole line into the shared buffer.
    public func append(_ line: UnsafeRawBufferPointer) { shared.append(line) }

    public func append(_ line: String) {
        var line = line
        line.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// Lines dropped because output could not keep up.
    public var droppedLines: Int {
        sources.withLockedValue { $0 }.reduce(0) { total, source in total + source.state.withLockedValue { $0.dropped } }
    }

    /// Writes everything buffered, source by source; returns when it is written (or the descriptor failed).
    public func flush() {
        let sources = self.sources.withLockedValue { $0 }
        writeLock.withLock {
            for source in sources {
                source.state.withLockedValue { state in swap(&spare, &state.pending) }
                let written = write(spare)
                // Keep the storage for the next swap, unless a burst left it large.
                if spare.capacity > 1 << 20 { spare = [] } else { spare.removeAll(keepingCapacity: true) }
                if !written { return }
            }
        }
    }

    /// False when the descriptor failed.
    private func write(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 {
                    if n < 0 && errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
    }
}
