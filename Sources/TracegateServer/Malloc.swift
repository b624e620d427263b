import Foundation

/// Tunes glibc's allocator: fewer arenas, heaps made writable before traffic, free memory given back.
/// `mallopt` and `malloc_trim` are not in Swift's Glibc module (they live in <malloc.h>), hence the
/// lookups; elsewhere these calls do nothing.
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

    /// How far each event loop's heap is made writable at start, or nil to leave it to glibc. 2,500
    /// chat streams grew one loop's heap to 41 MiB, so 48 MiB covers roughly 2,900 (an estimate);
    /// it stays below glibc's 64 MiB per heap, which is mapped (without access) from the start.
    /// Not done under strict overcommit (`vm.overcommit_memory` 2), where glibc gives a trimmed heap's
    /// pages up entirely and the writable extent with them, nor when `MALLOC_ARENA_MAX` is set, as
    /// loops may then share an arena or use the main one (which grows by `brk`, without this cost).
    static func heapToMakeWritable(overcommitMode: String?, environment: [String: String]) -> Int? {
        guard overcommitMode?.trimmingCharacters(in: .whitespacesAndNewlines) != "2",
              environment["MALLOC_ARENA_MAX"] == nil else { return nil }
        return 48 << 20
    }

    /// `heapToMakeWritable` for this process.
    static func heapToMakeWritable() -> Int? {
        heapToMakeWritable(
            overcommitMode: try? String(contentsOfFile: "/proc/sys/vm/overcommit_memory", encoding: .utf8),
            environment: ProcessInfo.processInfo.environment)
    }

    /// Makes the calling thread's heap writable `bytes` ahead of need, without keeping the memory.
    ///
    /// glibc grows a thread's heap only as far as each allocation needs, one `mprotect` per step of
    /// about a page, and never narrows what it made writable: a fresh process taking 5,000 chat
    /// streams made 20,480 such calls (`sysmalloc` and `mprotect` 3% of its CPU). Allocating and freeing
    /// `bytes` once at start makes such calls before any traffic (about 1,150 for 48 MiB). The freed
    /// blocks merge into the heap's top, which glibc trims (unless `MALLOC_TRIM_THRESHOLD_` is set
    /// above `bytes`). Another thread sharing the arena may allocate above some of them meanwhile:
    /// those below stay free inside the heap, and `releaseFreeMemory` afterwards gives their pages back.
    static func makeHeapWritableAhead(bytes: Int) {
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
    /// back memory at the top of a heap. It takes every arena's lock in turn, so it is called only at
    /// start, before serving, and after a crowd of connections has closed (`MemoryReturn`), never on a
    /// timer against traffic.
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
