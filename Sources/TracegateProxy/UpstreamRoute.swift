/// Which upstream an exchange goes to: the default one, or a configured route's.
///
/// Per-upstream tables (`ProxyConfiguration.upstreams`, the pools, the trace builder's route tags and
/// sources) hold the default upstream first and then each route in configuration order; `index` is
/// the position in them.
public struct UpstreamRoute: Hashable, Sendable, CustomStringConvertible {
    /// 0 for the default upstream, `i + 1` for the route configured `i`th.
    public let index: Int

    public static let defaultUpstream = UpstreamRoute(index: 0)

    /// The route configured at `position` (0-based) in `ProxyConfiguration.routes`.
    public static func configured(_ position: Int) -> UpstreamRoute {
        precondition(position >= 0, "a route's position is never negative")
        return UpstreamRoute(index: position + 1)
    }

    /// The route at `index` in the per-upstream tables.
    public init(index: Int) {
        precondition(index >= 0, "a route index is never negative")
        self.index = index
    }

    public var isDefault: Bool { index == 0 }

    public var description: String { isDefault ? "default upstream" : "route \(index - 1)" }
}
