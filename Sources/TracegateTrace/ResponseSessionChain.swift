/// Which session each Responses API response belongs to, so that a request continuing it
/// (`previous_response_id`) joins the same session. Bounded: beyond `capacity` the oldest
/// responses are forgotten, and a turn continuing a forgotten (or never seen: another replica,
/// a restart) response starts a new session named after that response.
public struct ResponseSessionChain: Sendable {
    public static let defaultCapacity = 100_000

    public let capacity: Int
    private var sessions: [String: String] = [:]
    /// Response ids in the order they were remembered; `oldest` is where eviction starts.
    private var order: [String] = []
    private var oldest = 0

    public init(capacity: Int = Self.defaultCapacity) {
        self.capacity = max(0, capacity)
    }

    public var count: Int { sessions.count }

    public func session(continuing responseID: String) -> String? { sessions[responseID] }

    public mutating func remember(response responseID: String, session: String) {
        guard capacity > 0 else { return }
        if sessions.updateValue(session, forKey: responseID) != nil { return }
        if order.count < capacity {
            order.append(responseID)
        } else {
            sessions.removeValue(forKey: order[oldest])
            order[oldest] = responseID
            oldest = (oldest + 1) % capacity
        }
    }
}
