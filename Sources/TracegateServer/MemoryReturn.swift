/// Decides when to give freed memory back to the system after many client connections closed.
///
/// glibc keeps what thousands of connections used (their channels and buffers) in its heaps after they
/// close; only `malloc_trim` returns it. Trimming takes each arena's lock in turn for milliseconds
/// (2–7 ms in all after 2,000 chat streams), and an event loop allocating meanwhile waits: so it is done
/// only once the crowd has left, at least `minimumDrop` connections fewer than the peak seen since the
/// last trim and at most an eighth of that peak still open, not while half of it still streams.
struct MemoryReturn {
    static let minimumDrop = 256
    /// At most one connection in this many of the peak may still be open.
    static let remainingShare = 8
    private var peak = 0

    /// Feeds the number of open connections now; true when it is time to trim.
    mutating func observe(openConnections: Int) -> Bool {
        peak = max(peak, openConnections)
        guard peak - openConnections >= Self.minimumDrop, openConnections * Self.remainingShare <= peak else { return false }
        peak = openConnections
        return true
    }
}
