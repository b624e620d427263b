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

    /// What each event loop's heap is made writable for at start: 2,500 chat streams grew one to 41 MiB.
    /// Below glibc's 64 MiB per heap, and only address space until used.
    static let eventLoopHeapReserve = 48 << 20

    /// Makes the calling thread's heap writable up to `bytes` ahead of need, holding no memory.
    ///
    /// glibc grows a thread's heap only as far as each allocation needs, one `mprotect` per step of a
    /// few pages, and never shrinks that writable extent: a fresh event loop taking 2,500 chat streams
    /// made about 10,000 such calls (4 per stream, with `sysmalloc` about 3% of the process's CPU).
    /// Allocating and freeing `bytes` once at start pays that in one go; the freed memory goes back to
    /// the system at once (the heap is trimmed), so resident memory is unchanged.
    static func reserveHeap(bytes: Int) {
        #if os(Linux)
        let block = 64 * 1024  // below glibc's mmap threshold: served from the heap
        var blocks: [UnsafeMutableRawPointer] = []
        blocks.reserveCapacity(bytes / block)
        for _ in 0..<(bytes / block) {
            guard let pointer = malloc(block) else { break }
            blocks.append(pointer)
        }
        // In allocation order each block merges with the one before; the last merges all with the top.
        for pointer in blocks { free(pointer) }
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
