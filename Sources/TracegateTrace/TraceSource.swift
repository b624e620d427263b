/// Where a trace came from, as MLflow's Source column shows it (trace metadata `mlflow.source.name`
/// and `mlflow.source.type`), and the route that took the request.
public struct TraceSource: Sendable, Equatable {
    /// The service or route name; MLflow shows what follows its last `/`.
    public var name: String
    /// E.g. `PROXY`.
    public var type: String
    /// The `[route NAME]` that took the request; nil for the default upstream.
    public var route: String?

    public init(name: String, type: String, route: String? = nil) {
        self.name = name
        self.type = type
        self.route = route
    }
}
