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

    /// Descriptors kept for listeners, pool spares, the tracking server and files, at most.
    static let largestReserve = 256

    /// Descriptors the table is sized for at start at most (`presizeTable`): 256 KiB of kernel memory.
    static let presizedDescriptors = 32_768

    /// How many descriptors to size the table for: two per allowed connection and the reserve, within
    /// the open-file limit and `presizedDescriptors`.
    static func tableSize(maxConnections: Int, limit: Int) -> Int {
        let wanted = min(maxConnections, presizedDescriptors / 2) * 2 + largestReserve
        return max(0, min(wanted, limit, presizedDescriptors))
    }

    /// Grows the kernel's descriptor table now to hold `descriptors` (a descriptor is placed at the last
    /// slot and closed; the table never shrinks). The kernel doubles the table when a new descriptor does
    /// not fit, and in a multi-threaded process waits for an RCU grace period to do so: with a fresh
    /// table, every doubling during a burst of connections stalled an event loop for 4–32 ms. Returns
    /// false if the table could not be grown (it then grows on demand).
    @discardableResult
    static func presizeTable(descriptors: Int) -> Bool {
        guard descriptors > 1, descriptors <= Int(Int32.max) else { return false }
        // A descriptor open in that slot (inherited) means the table is that large already; `dup2`
        // would close it.
        if fcntl(Int32(descriptors - 1), F_GETFD) != -1 { return true }
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard null >= 0 else { return false }
        defer { close(null) }
        let last = dup2(null, Int32(descriptors - 1))
        guard last >= 0 else { return false }
        close(last)
        return true
    }

    /// The `max_connections` that the open-file limit `limit` allows: a reserve (a quarter of the
    /// limit, at most 256) for listeners, upstream-pool spares, the tracking server and files, and
    /// two descriptors per client connection (its own and its upstream's).
    static func connectionsAllowed(byLimit limit: Int) -> Int {
        guard limit != Int.max else { return 1_000_000 }
        let reserve = min(largestReserve, limit / 4)
        return max(1, (limit - reserve) / 2)
    }
}
