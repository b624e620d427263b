import Foundation
import Logging
import NIOConcurrencyHelpers
import TracegateTrace

/// Where feedback goes; `MLflowClient` is the real one, tests use fakes.
public protocol AssessmentSink: Sendable {
    /// Throws `MLflowError`; a trace MLflow does not have (yet) is `rejected(404, …)`.
    func createAssessment(traceID: String, body: [UInt8]) async throws
    func traceInfo(traceID: String) async throws -> [UInt8]
}

extension MLflowClient: AssessmentSink {}

/// Counters of what feedback delivery did.
public struct FeedbackStats: Sendable, Equatable {
    public var queued = 0
    public var delivered = 0
    /// Deliveries postponed because MLflow did not have the trace yet.
    public var waitedForTrace = 0
    /// Tries that failed on the tracking server (unreachable, 5xx, 429).
    public var retries = 0
    /// Set aside in the dead-letter file: refused by MLflow, or the trace never arrived.
    public var rejected = 0
}

/// Delivers queued feedback to MLflow as assessments, oldest first, from disk spools, so a
/// tracking-server outage or a restart loses none.
///
/// Never twice: MLflow has no idempotency key, so before each POST the trace's assessments are read
/// and a feedback already listed (by `Feedback.id` in its metadata) is not sent again, whether the
/// earlier try timed out, the process was killed after it, or the spool replays it.
///
/// After the trace: a feedback whose trace MLflow does not have yet (it waits in the trace exporter's
/// queue or spool) moves to a second spool, `waiting/`, and is tried again after a growing pause (up
/// to `maxTraceWait`), while fresh feedback goes first; after `traceWaitLimit` it is set aside.
public final class FeedbackDelivery: Sendable {
    public struct Configuration: Sendable {
        public var initialBackoff: Duration = .milliseconds(200)
        public var maxBackoff: Duration = .seconds(30)
        /// Longest pause before asking again for a trace MLflow does not have yet.
        public var maxTraceWait: Duration = .seconds(60)
        /// How long a feedback may wait for its trace before it is set aside.
        public var traceWaitLimit: Duration = .seconds(24 * 3600)
        /// Bytes each of the two spools may hold; beyond it the oldest feedback is dropped.
        public var maxSpoolBytes = 32 << 20
        public init() {}
    }

    private struct State {
        var stopping = false
        var stats = FeedbackStats()
        var wake: CheckedContinuation<Void, Never>?
        /// Whether the current sleep ends when feedback is submitted (not during a backoff).
        var wakesOnSubmit = true
    }

    private let configuration: Configuration
    private let sink: AssessmentSink
    /// Feedback not tried yet, or interrupted by server trouble.
    let queued: DiskSpool<Feedback>
    /// Feedback whose trace MLflow did not have yet, in the order of their next try (roughly).
    let waiting: DiskSpool<Feedback>
    /// Feedback MLflow refused or whose trace never came, with the reason; at most 16 MiB.
    private let deadLetters: DeadLetterFile
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    /// Opens (or creates) `directory` with `queued/`, `waiting/` and `dead-letter.jsonl`.
    public init(configuration: Configuration = .init(), sink: AssessmentSink, directory: String, logger: Logger) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw SpoolError("cannot create the feedback spool directory \(directory): \(error.localizedDescription)")
        }
        self.configuration = configuration
        self.sink = sink
        queued = try DiskSpool(configuration: .init(directory: directory + "/queued", maxBytes: configuration.maxSpoolBytes))
        waiting = try DiskSpool(configuration: .init(directory: directory + "/waiting", maxBytes: configuration.maxSpoolBytes))
        deadLetters = DeadLetterFile(path: directory + "/dead-letter.jsonl", maxBytes: 16 << 20)
        self.logger = logger
    }

    public var stats: FeedbackStats { state.withLockedValue { $0.stats } }
    /// Feedback waiting on disk.
    public var pending: Int { queued.recordCount + waiting.recordCount }

    /// Queues a feedback durably (on disk) before returning; throws when it cannot be written.
    /// Never evicts: when the queue is full, the submission fails (the client gets 503) rather than
    /// dropping feedback already accepted.
    public func submit(_ feedback: Feedback) throws {
        guard queued.byteCount < configuration.maxSpoolBytes - Self.maxRecordBytes else {
            throw SpoolError("the feedback queue is full (\(queued.recordCount) waiting to be delivered)")
        }
        try queued.append([feedback])
        let wake = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            state.stats.queued += 1
            guard state.wakesOnSubmit else { return nil }
            defer { state.wake = nil }
            return state.wake
        }
        wake?.resume()
    }

    /// The most one feedback takes on disk: a 64 KiB post, every character escaped.
    static let maxRecordBytes = 512 << 10

    /// Delivers until `stop()`: fresh feedback first, then what waits for its trace once its pause is over.
    public func run() async {
        var backoff = configuration.initialBackoff
        while !state.withLockedValue({ $0.stopping }) {
            var trouble = false
            if let batch = queued.peek(max: 1) {
                trouble = await handle(batch, from: queued)
            } else if let batch = waiting.peek(max: 1), (batch.records.first?.notBeforeMillis ?? 0) <= Self.nowMillis() {
                trouble = await handle(batch, from: waiting)
            } else {
                let next = waiting.peek(max: 1)?.records.first.map { $0.notBeforeMillis - Self.nowMillis() } ?? 1000
                await sleepUntilWoken(atMost: .milliseconds(max(1, min(1000, next))))
                continue
            }
            if trouble {
                await sleepUntilWoken(atMost: backoff, wakesOnSubmit: false)
                backoff = min(configuration.maxBackoff, backoff * 2)
            } else {
                backoff = configuration.initialBackoff
            }
        }
        queued.sync()
        waiting.sync()
    }

    /// Tries the batch's one feedback; true when the tracking server is in trouble (it stays queued).
    private func handle(_ batch: DiskSpool<Feedback>.Batch, from spool: DiskSpool<Feedback>) async -> Bool {
        guard let feedback = batch.records.first else {
            spool.acknowledge(batch)  // an unreadable line
            return false
        }
        let now = Self.nowMillis()
        switch await deliver(feedback) {
        case .done:
            spool.acknowledge(batch)
        case .traceMissing:
            if Duration.milliseconds(now - feedback.createdMillis) > configuration.traceWaitLimit {
                setAside(feedback, batch, from: spool, reason: "MLflow never had trace \(feedback.traceID)")
                return false
            }
            var later = feedback
            later.attempts += 1
            let pause = min(configuration.maxTraceWait, configuration.initialBackoff * (1 << min(later.attempts, 16)))
            later.notBeforeMillis = now + Int64(pause.components.seconds * 1000 + pause.components.attoseconds / 1_000_000_000_000_000)
            state.withLockedValue { $0.stats.waitedForTrace += 1 }
            do {
                try waiting.append([later])
                spool.acknowledge(batch)
            } catch {
                logger.error("cannot move feedback \(feedback.id) to the waiting spool: \(error)")
                return true
            }
        case .refused(let why):
            setAside(feedback, batch, from: spool, reason: why)
        case .serverTrouble(let why):
            state.withLockedValue { $0.stats.retries += 1 }
            logger.debug("feedback delivery failed; retrying", metadata: ["error": "\(why)"])
            return true
        }
        return false
    }

    public func stop() {
        let wake = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            state.stopping = true
            defer { state.wake = nil }
            return state.wake
        }
        wake?.resume()
    }

    enum Outcome: Equatable {
        case done
        case traceMissing
        case refused(String)
        case serverTrouble(String)
    }

    /// One try: is it there already? If not, post it.
    func deliver(_ feedback: Feedback) async -> Outcome {
        do {
            let info = try await sink.traceInfo(traceID: feedback.traceID)
            if feedback.isListed(inTraceInfo: info) {
                state.withLockedValue { $0.stats.delivered += 1 }
                return .done
            }
            try await sink.createAssessment(traceID: feedback.traceID, body: feedback.createAssessmentJSON)
            state.withLockedValue { $0.stats.delivered += 1 }
            return .done
        } catch MLflowError.rejected(404, _) {
            return .traceMissing
        } catch let error as MLflowError where error.isRetryable {
            return .serverTrouble("\(error)")
        } catch MLflowError.rejected(let status, let body) where status == 401 || status == 403 {
            // Credentials expired or permissions changed: an operator fixes that; keep the feedback.
            return .serverTrouble("tracking server refused tracegate's credentials (\(status)): \(body.prefix(200))")
        } catch MLflowError.unexpectedResponse(let why) {
            return .serverTrouble(why)
        } catch {
            return .refused("\(error)")
        }
    }

    private func setAside(_ feedback: Feedback, _ batch: DiskSpool<Feedback>.Batch, from spool: DiskSpool<Feedback>, reason: String) {
        var written = "\(deadLetters.path)"
        do {
            try deadLetters.append(feedback, reason: reason)
        } catch {
            written = "not written: \(error)"
        }
        logger.warning(
            "feedback set aside",
            metadata: ["feedback_id": "\(feedback.id)", "trace_id": "\(feedback.traceID)", "reason": "\(reason)", "file": "\(written)"])
        state.withLockedValue { $0.stats.rejected += 1 }
        spool.acknowledge(batch)
    }

    /// Sleeps up to `limit`; `stop()` always wakes it, a submission only when `wakesOnSubmit`.
    private func sleepUntilWoken(atMost limit: Duration, wakesOnSubmit: Bool = true) async {
        guard limit > .zero else { return }
        let state = self.state  // the timer below must not keep the delivery (and its spool's lock) alive
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLockedValue { state -> Bool in
                if state.stopping { return true }
                state.wake = continuation
                state.wakesOnSubmit = wakesOnSubmit
                return false
            }
            if resumeNow { continuation.resume(); return }
            Task {
                try? await Task.sleep(for: limit)
                let wake = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                    defer { state.wake = nil }
                    return state.wake
                }
                wake?.resume()
            }
        }
    }

    public static func nowMillis() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}
