import TracegateTrace

/// Where a traced WebSocket tunnel's tap reports, on the tunnel's event loop: each read (the loop is
/// busy) and each turn that ended.
protocol WebSocketTurnSink: AnyObject {
    func tunnelRead()
    func turnEnded(_ captured: CapturedExchange)
}
