/// Decides when to give freed memory back to the system after many client connections closed.
///
/// glibc keeps what thousands of connections used (their channels and buffers) in its heaps after they
/// close; only `malloc_trim` returns it. Trimming takes each arena's lock in turn for milliseconds
/// (2–7 ms in all after 2,000 chat streams), and an event loop allocating meanwhile waits: so it is done
/// only once a crowd has left, at least `minimumDrop` connections fewer than the peak seen since the
/// last trim, and either at most an eighth of that peak still open, or at most half of it with the count
/// settled for `settledLooks` looks in a row (each within a sixteenth of the peak of the one before):
/// what stays open then is the ordinary load, not a crowd still leaving.
struct MemoryReturn {
    static let minimumDrop = 256
    /// At most one connection in this many of the peak may still be open for a trim at once.
    static let remainingShare = 8
    /// Looks in a row with at most half the peak open, and settled, before trimming anyway.
    static let settledLooks = 3
    private var peak = 0
    private var previous = 0
    private var settled = 0

    /// Feeds the number of open connections now; true when it is time to trim.
    mutating func observe(openConnections: Int) -> Bool {
        defer { previous = openConnections }
        peak = max(peak, openConnections)
        guard peak - openConnections >= Self.minimumDrop, openConnections * 2 <= peak else {
            settled = 0
            return false
        }
        settled = abs(previous - openConnections) * 16 < peak ? settled + 1 : 0
        guard openConnections * Self.remainingShare <= peak || settled >= Self.settledLooks else { return false }
        peak = openConnections
        settled = 0
        return true
    }
}
