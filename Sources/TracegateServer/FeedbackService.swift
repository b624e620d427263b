import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import TracegateExport
import TracegateTrace

/// The answer to a request at `feedback_path`.
struct FeedbackAnswer: Sendable, Equatable {
    var status: HTTPResponseStatus
    var json: String
    var headers: [(String, String)] = []

    static func == (a: Self, b: Self) -> Bool {
        a.status == b.status && a.json == b.json && a.headers.elementsEqual(b.headers, by: { $0 == $1 })
    }

    static func error(_ status: HTTPResponseStatus, _ message: String, headers: [(String, String)] = []) -> Self {
        FeedbackAnswer(status: status, json: #"{"error":"# + FeedbackService.quoted(message) + "}", headers: headers)
    }
}

/// Accepts feedback on traced exchanges (`POST feedback_path`): checks it, finds the trace, takes the
/// user from the same identity sources as traces, and queues it durably for `FeedbackDelivery`.
final class FeedbackService: Sendable {
    /// What the service needs from the tracking server to resolve ids it does not remember.
    struct Lookup: Sendable {
        var traceExists: @Sendable (String) async throws -> Bool
        var traceIDForRequestID: @Sendable (String) async throws -> String?
    }

    static let maxBodyBytes = 64 * 1024

    private let recent: NIOLockedValueBox<RecentTraceIndex>
    private let delivery: FeedbackDelivery
    private let lookup: Lookup
    private let identity: IdentityResolver
    private let cors: CORSPolicy
    private let limiter: NIOLockedValueBox<TokenBucket>
    /// How long a request id not yet built into a trace is waited for (the builder runs every 5 ms).
    private let builderGrace: Duration

    init(
        recent: NIOLockedValueBox<RecentTraceIndex>, delivery: FeedbackDelivery, lookup: Lookup, identity: IdentityResolver,
        cors: CORSPolicy, ratePerSecond: Int, builderGrace: Duration = .milliseconds(500)
    ) {
        self.recent = recent
        self.delivery = delivery
        self.lookup = lookup
        self.identity = identity
        self.cors = cors
        self.limiter = NIOLockedValueBox(
            TokenBucket(rate: Double(ratePerSecond), burst: Double(max(1, ratePerSecond * 2)), nowNanos: DispatchTime.now().uptimeNanoseconds))
        self.builderGrace = builderGrace
    }

    func answer(method: HTTPMethod, uri: String, headers: HTTPHeaders, body: ByteBuffer?) async -> FeedbackAnswer {
        let origin = headers.first(name: "origin")
        if method == .OPTIONS {
            guard let origin,
                let allowed = cors.preflight(
                    origin: origin, method: headers.first(name: "access-control-request-method"),
                    requestHeaders: headers.first(name: "access-control-request-headers"))
            else { return .error(.forbidden, "this origin may not post feedback (feedback_cors_origins)") }
            return FeedbackAnswer(status: .noContent, json: "", headers: allowed)
        }
        // A page from another site must not post feedback in its visitor's name (their cookies go along).
        // A page served through tracegate itself posts from its own origin, which is always allowed.
        if let origin, !cors.allows(origin), !Self.isSameOrigin(origin, headers) {
            return .error(.forbidden, "this origin may not post feedback (feedback_cors_origins)")
        }
        let corsHeaders = origin.flatMap { cors.allows($0) ? cors.responseHeaders(origin: $0) : nil } ?? []
        guard method == .POST else {
            return .error(.methodNotAllowed, "feedback is posted: POST a JSON body", headers: corsHeaders + [("Allow", "POST, OPTIONS")])
        }
        guard limiter.withLockedValue({ $0.take(nowNanos: DispatchTime.now().uptimeNanoseconds) }) else {
            return .error(.tooManyRequests, "too much feedback at once; try again in a second", headers: corsHeaders + [("Retry-After", "1")])
        }
        let request: FeedbackRequest
        switch FeedbackRequest.parse(body.map { Array($0.readableBytesView) } ?? []) {
        case .success(let parsed): request = parsed
        case .failure(let rejection): return .error(.badRequest, rejection.description, headers: corsHeaders)
        }
        let traceID: String
        switch await resolve(request.exchange) {
        case .found(let id): traceID = id
        case .unknown(let why): return .error(.notFound, why, headers: corsHeaders)
        case .unavailable(let why): return .error(.serviceUnavailable, why, headers: corsHeaders + [("Retry-After", "5")])
        }
        let feedback = Feedback(
            id: "fb-" + UUID().uuidString.lowercased(), traceID: traceID, name: request.name, valueJSON: request.valueJSON,
            rationale: request.rationale, metadata: request.metadata,
            user: identity.exportedUser(header: { headers.first(name: $0) }, target: uri), createdMillis: FeedbackDelivery.nowMillis())
        do {
            try delivery.submit(feedback)
        } catch {
            return .error(.serviceUnavailable, "feedback could not be queued: \(error)", headers: corsHeaders)
        }
        return FeedbackAnswer(
            status: .accepted, json: #"{"trace_id":"# + Self.quoted(traceID) + #","feedback_id":"# + Self.quoted(feedback.id) + "}",
            headers: corsHeaders)
    }

    /// Whether `origin` is the origin the client addressed: the proxy passes the client's `Host` and
    /// scheme on as `X-Forwarded-Host` / `X-Forwarded-Proto` (or the `Host` itself with `preserve_host`).
    static func isSameOrigin(_ origin: String, _ headers: HTTPHeaders) -> Bool {
        guard let host = headers.first(name: "x-forwarded-host") ?? headers.first(name: "host") else { return false }
        let scheme = headers.first(name: "x-forwarded-proto") ?? "http"
        return origin.lowercased() == "\(scheme)://\(host)".lowercased()
    }

    /// Whether `condition` holds for the recent traces within the builder's grace: a client may post
    /// feedback the moment its response ends, before the trace is built.
    private func waitForBuilder(_ condition: (RecentTraceIndex) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + builderGrace
        while true {
            if recent.withLockedValue({ condition($0) }) { return true }
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// A JSON string literal (a trace id found by search comes from the tracking server).
    static func quoted(_ text: String) -> String {
        TraceJSONWriter.quoted(text)
    }

    enum Resolution: Equatable {
        case found(String)
        case unknown(String)
        case unavailable(String)
    }

    /// The trace the feedback is about: remembered, else (after the builder's grace) asked of MLflow.
    func resolve(_ exchange: FeedbackRequest.Exchange) async -> Resolution {
        switch exchange {
        case .traceID(let id):
            if await waitForBuilder({ $0.contains(traceID: id) }) { return .found(id) }
            do {
                return try await lookup.traceExists(id) ? .found(id) : .unknown("no trace \(id)")
            } catch {
                return .unavailable("the tracking server cannot be asked about trace \(id) now; retry later")
            }
        case .requestID(let given):
            guard let key = IdentityValues.validate(user: nil, session: nil, requestID: given).clientRequestID else {
                return .unknown("no traced exchange has request id \(given)")
            }
            var found: String?
            if await waitForBuilder({ index in
                found = index.traceID(forRequestID: key)
                return found != nil
            }), let found {
                return .found(found)
            }
            do {
                if let id = try await lookup.traceIDForRequestID(key) { return .found(id) }
                return .unknown("no traced exchange has request id \(given)")
            } catch {
                return .unavailable("the tracking server cannot be asked about request id \(given) now; retry later")
            }
        }
    }
}
