/// Why spans were not delivered, and whether trying again can help.
public enum DeliveryError: Error, CustomStringConvertible, Equatable {
    /// Connection refused, reset, timed out: retry later.
    case unreachable(String)
    /// The server is overloaded or failing (5xx, 429, 408): retry later.
    case unavailable(status: Int, body: String)
    /// Any other 4xx: the request itself is wrong; retrying the same bytes cannot help.
    case rejected(status: Int, body: String)

    public var isRetryable: Bool {
        switch self {
        case .unreachable, .unavailable: return true
        case .rejected: return false
        }
    }

    public var description: String {
        switch self {
        case .unreachable(let why): return "unreachable: \(why)"
        case .unavailable(let status, let body): return "answered \(status): \(body.prefix(300))"
        case .rejected(let status, let body): return "rejected the request (\(status)): \(body.prefix(300))"
        }
    }
}
