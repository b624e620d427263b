/// The newest traces built, by the client request id their exchange carried: how feedback that
/// names a request id finds its trace. Bounded to `capacity`; the oldest are forgotten first (such
/// feedback is then resolved by asking MLflow). A request id seen again (a client retry) names the
/// newest trace.
struct RecentTraceIndex {
    let capacity: Int
    private var traceByRequestID: [String: String] = [:]
    private var traceIDs: [String: Int] = [:]
    private var ring: [(requestID: String, traceID: String)] = []
    private var oldest = 0

    init(capacity: Int) { self.capacity = max(1, capacity) }

    func traceID(forRequestID requestID: String) -> String? { traceByRequestID[requestID] }

    func contains(traceID: String) -> Bool { traceIDs[traceID] != nil }

    mutating func remember(requestID: String, traceID: String) {
        if ring.count == capacity {
            let evicted = ring[oldest]
            if traceByRequestID[evicted.requestID] == evicted.traceID { traceByRequestID.removeValue(forKey: evicted.requestID) }
            if let count = traceIDs[evicted.traceID] { traceIDs[evicted.traceID] = count > 1 ? count - 1 : nil }
            ring[oldest] = (requestID, traceID)
            oldest = (oldest + 1) % capacity
        } else {
            ring.append((requestID, traceID))
        }
        traceByRequestID[requestID] = traceID
        traceIDs[traceID, default: 0] += 1
    }
}
