/// When capture pauses because the tracking servers are behind (`export_backlog_limit`), and when it
/// resumes: it pauses once every exporter's server answers but owes `limit` traces or more, and
/// resumes once one of them owes less than 90% of that, so it does not flap at the limit. An exporter
/// whose server does not answer (backlog nil: an outage) keeps capture going, since its spool keeps
/// the outage's traces.
struct BacklogPause {
    let limit: Int
    private(set) var isPaused = false

    init(limit: Int) { self.limit = limit }

    /// Takes each exporter's backlog (nil while its server does not answer); returns the new state
    /// when it changes, nil otherwise.
    mutating func observe(backlogs: [Int?]) -> Bool? {
        let threshold = isPaused ? limit * 9 / 10 : limit
        let behind = !backlogs.isEmpty && backlogs.allSatisfy { ($0 ?? 0) >= threshold }
        guard behind != isPaused else { return nil }
        isPaused = behind
        return behind
    }
}
