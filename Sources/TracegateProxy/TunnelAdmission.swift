import NIOConcurrencyHelpers

/// Counts the WebSocket tunnels open across every event loop, up to `max_websocket_connections`: a
/// slot is taken when an upgrade request arrives and given back when its exchange ends, whether or
/// not the upstream switched protocols. Taken rarely (once per upgrade), so a lock is enough.
final class TunnelAdmission: Sendable {
    let limit: Int
    private let open = NIOLockedValueBox(0)

    init(limit: Int) { self.limit = limit }

    /// Takes a slot; false when `limit` are taken.
    func admit() -> Bool {
        open.withLockedValue { open in
            guard open < limit else { return false }
            open += 1
            return true
        }
    }

    func release() { open.withLockedValue { $0 -= 1 } }

    var count: Int { open.withLockedValue { $0 } }
}
