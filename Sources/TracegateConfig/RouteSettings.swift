/// A `[route NAME]` section of proxy.conf: requests whose path starts with `path_prefix` (and, when
/// set, whose `Host` is `host`) go to `upstream`, and their traces to the route's experiment with
/// the route's tags added.
public struct Route: Sendable, Equatable {
    public var name: String
    public var pathPrefix: String
    /// Host name to match (no port); nil matches any.
    public var host: String?
    public var upstream: UpstreamURL
    /// The route's experiment; when neither is set, the global one.
    public var mlflowExperimentName: String?
    public var mlflowExperimentID: String?
    /// Added to (and overriding) the global `trace_tags`.
    public var traceTags: NamedPairs
    /// MLflow's Source column for this route's traces; nil: the global `trace_source_name`, else the route's name.
    public var traceSourceName: String? = nil
}

/// The keys a route section takes, and how a section becomes a `Route`.
enum RouteSettings {
    static let keys = [
        "path_prefix", "host", "upstream", "mlflow_experiment_name", "mlflow_experiment_id", "trace_tags", "trace_source_name",
    ]

    /// Routes in file order; each bad value or missing key names the file, line, key and what is accepted.
    static func routes(from entries: [ConfigFile.Entry], path: String) throws(ConfigError) -> [Route] {
        var sections: [ConfigFile.Section] = []
        var bySection: [ConfigFile.Section: [ConfigFile.Entry]] = [:]
        for entry in entries {
            guard let section = entry.section else { continue }
            if bySection[section] == nil { sections.append(section) }
            bySection[section, default: []].append(entry)
        }
        var routes: [Route] = []
        for section in sections {
            let route = try route(section, bySection[section] ?? [], path: path)
            if let clash = routes.first(where: { $0.pathPrefix == route.pathPrefix && $0.host == route.host }) {
                throw ConfigError(
                    source: .file(path: path, line: section.line), key: "path_prefix",
                    message: "route '\(route.name)' has the same path_prefix and host as route '\(clash.name)'")
            }
            routes.append(route)
        }
        return routes
    }

    private static func route(_ section: ConfigFile.Section, _ entries: [ConfigFile.Entry], path: String) throws(ConfigError) -> Route {
        var values: [String: (String, Int)] = [:]
        for entry in entries { values[entry.key] = (entry.value, entry.line) }
        func parse<Value>(_ key: String, _ kind: ValueKind<Value>) throws(ConfigError) -> Value? {
            guard let (text, line) = values[key] else { return nil }
            do {
                return try kind.parse(text)
            } catch {
                let reason = error.reason.map { "\($0); " } ?? ""
                throw ConfigError(
                    source: .file(path: path, line: line), key: key,
                    message: "invalid value '\(text)' for \(key) in [route \(section.name)]: \(reason)expected \(kind.accepted)")
            }
        }
        func missing(_ key: String) -> ConfigError {
            ConfigError(
                source: .file(path: path, line: section.line), key: key,
                message: "route '\(section.name)' needs \(key)")
        }
        guard let prefix = try parse("path_prefix", .pathPrefix) else { throw missing("path_prefix") }
        guard let upstream = try parse("upstream", .upstreamURL) else { throw missing("upstream") }
        let name = try parse("mlflow_experiment_name", .optionalText) ?? nil
        let id = try parse("mlflow_experiment_id", .optionalExperimentID) ?? nil
        if name != nil && id != nil {
            throw ConfigError(
                source: .file(path: path, line: section.line), key: "mlflow_experiment_id",
                message: "route '\(section.name)' sets both mlflow_experiment_name and mlflow_experiment_id; keep one")
        }
        return Route(
            name: section.name, pathPrefix: prefix, host: try parse("host", .hostName) ?? nil, upstream: upstream,
            mlflowExperimentName: name, mlflowExperimentID: id, traceTags: try parse("trace_tags", .tagList) ?? NamedPairs([]),
            traceSourceName: try parse("trace_source_name", .optionalSourceName) ?? nil)
    }
}

extension ValueKind where Value == String {
    /// `/v1/chat`: starts with `/`, no query, no spaces.
    static var pathPrefix: Self {
        .init(placeholder: "PATH", accepted: "a path starting with /, such as /v1/chat",
              parse: { (text) throws(ValueRejection) in
                  guard text.hasPrefix("/"), !text.contains("?"), !text.contains(" ") else { throw ValueRejection() }
                  return text
              })
    }
}

extension ValueKind where Value == String? {
    /// A host name without port, compared case-insensitively; empty means any host.
    static var hostName: Self {
        .init(placeholder: "HOST", accepted: "a host name such as api.example.com (no port), or nothing",
              parse: { (text) throws(ValueRejection) in
                  if text.isEmpty { return nil }
                  guard text.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" }) else {
                      throw ValueRejection()
                  }
                  return text.lowercased()
              })
    }
}
