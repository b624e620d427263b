/// Where the MLflow experiment id comes from.
public enum ExperimentSource: Sendable {
    case id(String)
    /// Looked up (and created) by name, e.g. with `MLflowClient.experimentID(named:)`; retried while
    /// it throws a retryable `MLflowError`.
    case resolve(name: String, using: @Sendable (String) async throws -> String)
}
