#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process's open-file limit, which bounds how many connections can be open at once.
enum FileDescriptorLimit {
    /// Raises the soft limit to the hard limit (as Go and Envoy do): each client connection may hold
    /// an upstream connection too, and the default soft limit (often 1024) is far below `max_connections`.
    /// Returns the limit now in force.
    @discardableResult
    static func raiseToHardLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return -1 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return limit.rlim_cur >= UInt64(Int.max) ? Int.max : Int(limit.rlim_cur)
    }

    /// The `max_connections` that the open-file limit `limit` allows: a reserve (a quarter of the
    /// limit, at most 256) for listeners, upstream-pool spares, the tracking server and files, and
    /// two descriptors per client connection (its own and its upstream's).
    static func connectionsAllowed(byLimit limit: Int) -> Int {
        guard limit != Int.max else { return 1_000_000 }
        let reserve = min(256, limit / 4)
        return max(1, (limit - reserve) / 2)
    }
}
