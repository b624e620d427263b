/// Decides when to give freed memory back to the system after many client connections closed.
///
/// glibc keeps what thousands of connections used (their channels and buffers) in its heaps after they
/// close; only `malloc_trim` returns it. Trimming takes the allocator's locks, so it is done only after
/// a real drop: at least `minimumDrop` connections fewer than the peak seen since the last trim, and
/// at most half of that peak still open.
struct MemoryReturn {
    static let minimumDrop = 256
    private var peak = 0

    /// Feeds the number of open connections now; true when it is time to trim.
    mutating func observe(openConnections: Int) -> Bool {
        peak = max(peak, openConnections)
        guard peak - openConnections >= Self.minimumDrop, openConnections * 2 <= peak else { return false }
        peak = openConnections
        return true
    }
}
