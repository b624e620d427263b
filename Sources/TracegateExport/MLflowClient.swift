import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// How requests to the tracking server authenticate, with the MLflow Python client's rules.
public enum MLflowAuth: Sendable, Equatable {
    case none
    case basic(username: String, password: String)
    case bearer(token: String)

    /// `MLFLOW_TRACKING_USERNAME` + `MLFLOW_TRACKING_PASSWORD` give Basic; otherwise
    /// `MLFLOW_TRACKING_TOKEN` gives Bearer; otherwise nothing.
    public static func resolve(username: String?, password: String?, token: String?) -> MLflowAuth {
        if let username, let password, !username.isEmpty { return .basic(username: username, password: password) }
        if let token, !token.isEmpty { return .bearer(token: token) }
        return .none
    }

    var headerValue: String? {
        switch self {
        case .none: return nil
        case .basic(let username, let password): return "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
        case .bearer(let token): return "Bearer " + token
        }
    }
}

/// Why a call to the tracking server failed, and whether trying again can help.
public enum MLflowError: Error, CustomStringConvertible, Equatable {
    /// Connection refused, reset, timed out: retry later.
    case unreachable(String)
    /// 5xx or 429: retry later.
    case unavailable(status: Int, body: String)
    /// 4xx other than 429: the request itself is wrong; retrying the same bytes cannot help.
    case rejected(status: Int, body: String)
    /// The experiment exists but was deleted.
    case deletedExperiment(name: String, id: String)
    /// A 200 whose body is not what the protocol promises.
    case unexpectedResponse(String)

    public var isRetryable: Bool {
        switch self {
        case .unreachable, .unavailable: return true
        case .rejected, .deletedExperiment, .unexpectedResponse: return false
        }
    }

    public var description: String {
        switch self {
        case .unreachable(let why): return "tracking server unreachable: \(why)"
        case .unavailable(let status, let body): return "tracking server answered \(status): \(body.prefix(300))"
        case .rejected(let status, let body): return "tracking server rejected the request (\(status)): \(body.prefix(300))"
        case .deletedExperiment(let name, let id):
            return "experiment '\(name)' (id \(id)) is deleted; restore it with `mlflow experiments restore --experiment-id \(id)` "
                + "(or POST /api/2.0/mlflow/experiments/restore), or choose another MLFLOW_EXPERIMENT_NAME"
        case .unexpectedResponse(let why): return "unexpected answer from the tracking server: \(why)"
        }
    }
}

/// The calls tracegate makes to an MLflow 3 tracking server (see the MLflow trace-ingest reference):
/// experiment lookup/creation, OTLP `/v1/traces`, and StartTraceV3.
public struct MLflowClient: Sendable {
    public let trackingURI: String
    private let auth: MLflowAuth
    private let http: HTTPClient
    private let timeout: TimeAmount

    public init(trackingURI: String, auth: MLflowAuth, http: HTTPClient, timeout: TimeAmount = .seconds(30)) {
        var uri = trackingURI
        while uri.hasSuffix("/") { uri.removeLast() }
        self.trackingURI = uri
        self.auth = auth
        self.http = http
        self.timeout = timeout
    }

    /// The id of the active experiment `name`, created when missing (a concurrent creation is tolerated).
    public func experimentID(named name: String) async throws -> String {
        if let found = try await lookUpExperiment(name) { return found }
        do {
            let created = try await send(.POST, "/api/2.0/mlflow/experiments/create", json: ["name": name])
            if let id = (try? JSONSerialization.jsonObject(with: Data(created))) .flatMap({ ($0 as? [String: Any])?["experiment_id"] as? String }) {
                return id
            }
            throw MLflowError.unexpectedResponse("experiment create returned no experiment_id")
        } catch MLflowError.rejected(let status, let body) where body.contains("RESOURCE_ALREADY_EXISTS") {
            // Created meanwhile by someone else, or it exists in the deleted state.
            if let found = try await lookUpExperiment(name) { return found }
            throw MLflowError.rejected(status: status, body: body)
        }
    }

    private func lookUpExperiment(_ name: String) async throws -> String? {
        let query = name.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+#"))) ?? name
        let body: [UInt8]
        do {
            body = try await send(.GET, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=\(query)")
        } catch MLflowError.rejected(404, _) {
            return nil
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
            let experiment = object["experiment"] as? [String: Any],
            let id = experiment["experiment_id"] as? String
        else { throw MLflowError.unexpectedResponse("get-by-name returned no experiment") }
        if (experiment["lifecycle_stage"] as? String) == "deleted" {
            throw MLflowError.deletedExperiment(name: name, id: id)
        }
        return id
    }

    /// Posts one OTLP/JSON `ExportTraceServiceRequest` (many traces) into `experimentID`.
    public func postTraces(_ otlpJSON: [UInt8], experimentID: String) async throws {
        _ = try await send(.POST, "/v1/traces", body: otlpJSON, headers: [("x-mlflow-experiment-id", experimentID)])
    }

    /// StartTraceV3: sets client_request_id and metadata of one trace; returns the echoed trace info.
    public func startTrace(_ body: [UInt8]) async throws -> [UInt8] {
        try await send(.POST, "/api/3.0/mlflow/traces", body: body)
    }

    /// Creates an assessment (here: a feedback) on a trace; a missing trace is `rejected(404, …)`.
    public func createAssessment(traceID: String, body: [UInt8]) async throws {
        _ = try await send(.POST, "/api/3.0/mlflow/traces/\(traceID)/assessments", body: body)
    }

    /// GetTraceInfoV3: the trace's info, assessments included; a missing trace is `rejected(404, …)`.
    public func traceInfo(traceID: String) async throws -> [UInt8] {
        try await send(.GET, "/api/3.0/mlflow/traces/\(traceID)")
    }

    /// The newest trace in these experiments whose `client_request_id` is `requestID`, if any.
    public func traceID(clientRequestID requestID: String, experimentIDs: [String]) async throws -> String? {
        // MLflow's filter grammar has no escapes: quote with the kind of quote the id does not contain.
        let quoted: String
        if !requestID.contains("'") {
            quoted = "'" + requestID + "'"
        } else if !requestID.contains("\"") {
            quoted = "\"" + requestID + "\""
        } else {
            return nil
        }
        let request: [String: Any] = [
            "locations": experimentIDs.map { ["type": "MLFLOW_EXPERIMENT", "mlflow_experiment": ["experiment_id": $0]] },
            "filter": "trace.client_request_id = \(quoted)", "max_results": 1, "order_by": ["timestamp_ms DESC"],
        ]
        let body = try await send(.POST, "/api/3.0/mlflow/traces/search", body: [UInt8](JSONSerialization.data(withJSONObject: request)))
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw MLflowError.unexpectedResponse("trace search returned no JSON object")
        }
        let infos = object["traces"] as? [[String: Any]] ?? []
        return infos.first?["trace_id"] as? String
    }

    private func send(_ method: HTTPMethod, _ path: String, json: [String: String]) async throws -> [UInt8] {
        let body = try JSONSerialization.data(withJSONObject: json)
        return try await send(method, path, body: [UInt8](body))
    }

    private func send(
        _ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, headers: [(String, String)] = []
    ) async throws -> [UInt8] {
        var request = HTTPClientRequest(url: trackingURI + path)
        request.method = method
        if let body {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        if let value = auth.headerValue { request.headers.add(name: "authorization", value: value) }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            response = try await http.execute(request, timeout: timeout)
            bytes = try await response.body.collect(upTo: 16 * 1024 * 1024)
        } catch {
            throw MLflowError.unreachable("\(error)")
        }
        let text = String(buffer: bytes)
        switch response.status.code {
        case 200..<300: return Array(bytes.readableBytesView)
        case 429, 500..<600: throw MLflowError.unavailable(status: Int(response.status.code), body: text)
        default: throw MLflowError.rejected(status: Int(response.status.code), body: text)
        }
    }
}
