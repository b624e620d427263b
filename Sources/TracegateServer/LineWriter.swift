import Atomics
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// Buffers lines; `flush()` writes them to a file descriptor in one batch (`AccessLogService` calls it
/// every 100 ms, off the event loops): an event loop only copies its line into memory, so a slow
/// reader of standard output never blocks forwarding.
///
/// Each event loop appends to a `Source` of its own (`makeSource()`), whose lock only `flush()` ever
/// takes besides it, for a swap: with one buffer shared by the loops, a loop preempted while holding
/// its lock stalled the other loop's requests for milliseconds. Every line is stamped with the
/// monotonic clock as it is appended (no counter shared by the loops), and `flush()` merges the
/// sources by that stamp, so the lines of a flush come out in the order they were appended (only
/// lines appended at the very moment of a flush can land in the next one). The sources hold at most
/// 8 MiB together (each an equal share, at least 1 MiB); beyond that lines are counted as dropped
/// rather than letting a blocked output grow memory.
/// (`@unchecked`: `spares` and `output` are touched only under `writeLock`.)
public final class LineWriter: @unchecked Sendable {
    /// One writer's lines waiting for `flush()`, each stored as its stamp (8 bytes), its length
    /// (4 bytes) and its bytes.
    public final class Source: Sendable {
        fileprivate struct State {
            var pending: [UInt8] = []
            var dropped = 0
        }

        fileprivate static let headerBytes = 12
        fileprivate let state = NIOLockedValueBox(State())
        /// This source's share of `maxPendingBytes` (written only as sources are made).
        private let cap: ManagedAtomic<Int>

        fileprivate init(cap: ManagedAtomic<Int>) { self.cap = cap }

        /// Copies a whole line into the buffer.
        public func append(_ line: UnsafeRawBufferPointer) {
            state.withLockedValue { state in
                if state.pending.count + Self.headerBytes + line.count > cap.load(ordering: .relaxed) {
                    state.dropped += 1
                    return
                }
                // Stamped under the lock: within a source the stamps never fall, which the merge relies on.
                let stamp = NIODeadline.now().uptimeNanoseconds
                withUnsafeBytes(of: stamp.littleEndian) { state.pending.append(contentsOf: $0) }
                withUnsafeBytes(of: UInt32(line.count).littleEndian) { state.pending.append(contentsOf: $0) }
                state.pending.append(contentsOf: line)
            }
        }
    }

    private let fd: Int32
    private let capPerSource = ManagedAtomic<Int>(LineWriter.maxPendingBytes)
    /// For writers that have no source of their own; made on first use, so that the event loops'
    /// sources share the cap between themselves only.
    private let shared = NIOLockedValueBox<Source?>(nil)
    private let sources = NIOLockedValueBox<[Source]>([])
    private let writeLock = NIOLock()
    /// What `flush` merges from: swapped with the sources' pending buffers, so appending goes on
    /// meanwhile. Touched only under `writeLock`.
    private var spares: [[UInt8]] = []
    private var output: [UInt8] = []
    static let maxPendingBytes = 8 * 1024 * 1024
    /// No source's share is smaller, however many loops there are (~100 ms of 70,000 lines/s).
    static let minimumShare = 1024 * 1024

    public init(fd: Int32 = STDOUT_FILENO) {
        self.fd = fd
    }

    /// A buffer of its own for one thread (an event loop), flushed with the others.
    public func makeSource() -> Source {
        let source = Source(cap: capPerSource)
        sources.withLockedValue { sources in
            sources.append(source)
            capPerSource.store(max(Self.minimumShare, Self.maxPendingBytes / sources.count), ordering: .relaxed)
        }
        return source
    }

    /// Copies a whole line into the shared buffer.
    public func append(_ line: UnsafeRawBufferPointer) {
        shared.withLockedValue { shared in
            if shared == nil { shared = makeSource() }
            return shared!
        }.append(line)
    }

    public func append(_ line: String) {
        var line = line
        line.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// Lines dropped because output could not keep up.
    public var droppedLines: Int {
        sources.withLockedValue { $0 }.reduce(0) { total, source in total + source.state.withLockedValue { $0.dropped } }
    }

    /// Writes everything buffered, in the order it was appended; returns when it is written (or the
    /// descriptor failed).
    public func flush() {
        let sources = self.sources.withLockedValue { $0 }
        writeLock.withLock {
            while spares.count < sources.count { spares.append([]) }
            for (index, source) in sources.enumerated() {
                source.state.withLockedValue { state in swap(&spares[index], &state.pending) }
            }
            output.removeAll(keepingCapacity: true)
            Self.merge(spares[0..<sources.count], into: &output)
            write(output)
            // Keep the storage for the next swap, unless a burst left it large.
            for index in spares.indices {
                if spares[index].capacity > 1 << 20 { spares[index] = [] } else { spares[index].removeAll(keepingCapacity: true) }
            }
            if output.capacity > 1 << 20 { output = [] }
        }
    }

    /// The lines of `buffers` (each in stamp order) by stamp, without their headers; on equal stamps
    /// the earlier buffer's line first. Pointer arithmetic only: it runs every 100 ms on a thread that
    /// competes with the event loops for the CPUs.
    private static func merge(_ buffers: ArraySlice<[UInt8]>, into output: inout [UInt8]) {
        output.reserveCapacity(buffers.reduce(0) { $0 + $1.count })
        withBytes(of: buffers) { raws in merge(raws, into: &output) }
    }

    /// `body` given the bytes of every buffer at once.
    private static func withBytes(
        of buffers: ArraySlice<[UInt8]>, collected: [UnsafeRawBufferPointer] = [],
        _ body: ([UnsafeRawBufferPointer]) -> Void
    ) {
        guard let first = buffers.first else { return body(collected) }
        first.withUnsafeBytes { raw in withBytes(of: buffers.dropFirst(), collected: collected + [raw], body) }
    }

    private static func merge(_ raws: [UnsafeRawBufferPointer], into output: inout [UInt8]) {
        var offsets = [Int](repeating: 0, count: raws.count)
        while true {
            var next = -1
            var lowest = UInt64.max
            for index in 0..<raws.count where offsets[index] < raws[index].count {
                let candidate = UInt64(littleEndian: raws[index].loadUnaligned(fromByteOffset: offsets[index], as: UInt64.self))
                if next < 0 || candidate < lowest { (next, lowest) = (index, candidate) }
            }
            guard next >= 0 else { return }
            let raw = raws[next]
            let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offsets[next] + 8, as: UInt32.self)))
            let start = offsets[next] + Source.headerBytes
            output.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)]))
            offsets[next] = start + length
        }
    }

    private func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 {
                    if n < 0 && errno == EINTR { continue }
                    return
                }
                offset += n
            }
        }
    }
}
