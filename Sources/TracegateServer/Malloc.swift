import Foundation

/// Keeps glibc's allocator from holding on to memory the process no longer uses. Neither call is in
/// Swift's Glibc module (they live in <malloc.h>), hence the lookups; elsewhere both do nothing.
enum Malloc {
    /// glibc gives threads that allocate arenas of their own (up to 8 per core), and freed memory stays
    /// in each: with event loops, the trace builder, the exporters' HTTP client and Dispatch workers that
    /// can be tens of MiB of RSS. So the arenas are capped, at four per event loop: with two in all, an
    /// event loop shared an arena with the idle-priority builder or the other loop and waited on its
    /// lock, 8–48 ms per 6 s of `wrk -c32` in most runs, single waits up to 25 ms; with eight, 0–3 ms,
    /// at the same RSS. `MALLOC_ARENA_MAX` in the environment still wins.
    static func limitArenas(eventLoops: Int) {
        #if os(Linux)
        guard ProcessInfo.processInfo.environment["MALLOC_ARENA_MAX"] == nil, let mallopt = GlibcSymbol.address(of: "mallopt") else { return }
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        let mArenaMax: Int32 = -8  // M_ARENA_MAX in <malloc.h>
        _ = unsafeBitCast(mallopt, to: Mallopt.self)(mArenaMax, Int32(clamping: 4 * max(1, eventLoops)))
        #endif
    }

    /// Returns free pages inside the heaps to the system (`malloc_trim(0)`): glibc by itself only gives
    /// back memory at the top of a heap. It takes every arena's lock in turn, so it is called only after
    /// a crowd of connections has closed (`MemoryReturn`), never on a timer against traffic.
    static func releaseFreeMemory() {
        #if os(Linux)
        guard let trim = mallocTrim else { return }
        typealias MallocTrim = @convention(c) (Int) -> Int32
        _ = unsafeBitCast(trim, to: MallocTrim.self)(0)
        #endif
    }

    #if os(Linux)
    private nonisolated(unsafe) static let mallocTrim = GlibcSymbol.address(of: "malloc_trim")
    #endif
}
