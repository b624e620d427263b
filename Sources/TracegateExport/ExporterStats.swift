import Logging
import NIOConcurrencyHelpers
import TracegateTrace

/// Counters of what the exporter did.
public struct ExporterStats: Sendable, Equatable {
    public var exported = 0
    public var retries = 0
    /// Traces lost: memory full without a spool, spool full, or spool unwritable.
    public var dropped = 0
    /// Traces the server refused as invalid, set aside (dead-lettered) after bisecting their batch.
    public var rejected = 0
    public var startTraceFailures = 0
    /// Stored traces whose StartTraceV3 was given up because its queue overflowed and there is no spool.
    public var traceInfoDropped = 0
    /// Traces written to the spool (server trouble, full memory queue, shutdown).
    public var spooled = 0
    /// Traces read back from the spool and delivered.
    public var replayed = 0
}
