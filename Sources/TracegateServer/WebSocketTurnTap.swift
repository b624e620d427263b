import NIOCore
import NIOPosix
import TracegateExport
import TracegateProxy
import TracegateTrace

/// A traced WebSocket tunnel's side of its `TraceTap`: the turn tracker, fed the tunnel's bytes in
/// place, with what it holds charged to the capture budget as it grows and given back as it shrinks
/// (when the budget is spent, the tracker sheds what it holds). Used on the tunnel's event loop only.
final class WebSocketTurnTap {
    private var tracker: WebSocketTurnTracker
    private let budget: CaptureBudget
    /// Bytes of the budget the tracker's held data is charged.
    private var charged = 0
    private let openedAt = NIODeadline.now()
    /// Wall-clock time the tunnel opened, nanoseconds since the Unix epoch.
    let openedAtEpochNanos: Int64
    /// The route of the upgrade (`UpstreamRoute.index`).
    let route: Int
    /// The upgrade request's method and target, as every turn's capture names them.
    let method: String
    let target: String
    let requestID: String
    /// Draws the turns' trace ids and the connection's id.
    var random = Xoshiro256StarStar()
    /// The session of the connection's turns when the upgrade named none: stable, unique per connection.
    private(set) lazy var connectionID: String = {
        let hex = String(random.next(), radix: 16)
        return "ws-" + String(repeating: "0", count: 16 - hex.count) + hex
    }()

    init(tracker: WebSocketTurnTracker, route: Int, method: String, target: String, requestID: String, budget: CaptureBudget) {
        self.tracker = tracker
        self.route = route
        self.method = method
        self.target = target
        self.requestID = requestID
        self.budget = budget
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        openedAtEpochNanos = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    /// Reads bytes sent one way; returns the turns they ended.
    func read(_ bytes: ByteBuffer, fromClient: Bool) -> [WebSocketTurn] {
        let nanos = (NIODeadline.now() - openedAt).nanoseconds
        let turns = bytes.withUnsafeReadableBytes { tracker.feed($0, fromClient: fromClient, atNanos: nanos) }
        settleCharge()
        return turns
    }

    /// When the open turn is complete if nothing passes before (`WebSocketTurnTracker.quietDeadlineNanos`).
    var quietDeadline: NIODeadline? {
        tracker.quietDeadlineNanos.map { openedAt + .nanoseconds($0) }
    }

    /// The open turn, if nothing passed until its quiet deadline.
    func endQuietTurn() -> WebSocketTurn? {
        let turn = tracker.endQuietTurn(atNanos: (NIODeadline.now() - openedAt).nanoseconds)
        if turn != nil { settleCharge() }
        return turn
    }

    /// Charges the budget for what the tracker holds now (shedding when it is spent), or gives back
    /// what it no longer holds.
    private func settleCharge() {
        var held = tracker.heldBytes
        if held > charged {
            let wanted = held - charged
            let granted = budget.reserve(wanted)
            charged += granted
            if granted < wanted {
                tracker.shed()
                held = tracker.heldBytes
            }
        }
        if held < charged {
            budget.release(charged - held)
            charged = held
        }
    }

    /// The tunnel closed: the open turn, if it is one to trace; the budget is given back.
    func finish(why: String) -> WebSocketTurn? {
        let turn = tracker.finish(atNanos: (NIODeadline.now() - openedAt).nanoseconds, why: why)
        budget.release(charged)
        charged = 0
        return turn
    }
}
