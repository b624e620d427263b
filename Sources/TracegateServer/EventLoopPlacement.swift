#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TracegateConfig

/// How many event loops run, and on which CPU each. Left to the scheduler, two busy loops could share
/// one CPU for seconds while the other CPU ran the clients and upstream: requests then waited for the
/// other loop's turn, and the p99 latency doubled. Pinned, each loop keeps a CPU of its own, as nginx's
/// `worker_cpu_affinity auto` does.
struct EventLoopPlacement: Equatable {
    /// The CPU of each event loop, in loop order; nil when the scheduler places them.
    let cpus: [Int]?

    /// `auto` pins only when the process may run on exactly as many CPUs as there are loops, two or
    /// more: it then owns those CPUs (`taskset`, a cpuset, or the whole machine). With more CPUs than
    /// loops (a CPU quota in a container, `threads` set lower) pinning would pick CPUs other processes
    /// also get pinned to; with more loops than CPUs they share anyway; one loop may as well move.
    init(threads: Int, usableCPUs: [Int], affinity: CPUAffinity) {
        guard affinity == .auto, threads > 1, usableCPUs.count == threads else {
            cpus = nil
            return
        }
        cpus = usableCPUs.sorted()
    }

    /// Event loops for the `threads` setting: 0 means one per CPU, counting only the CPUs this process
    /// may use (`coreCount` is NIO's figure, which honours a cgroup CPU quota but not `taskset`).
    static func threadCount(setting: Int, coreCount: Int, usableCPUs: [Int]) -> Int {
        if setting > 0 { return setting }
        return usableCPUs.isEmpty ? max(1, coreCount) : max(1, min(coreCount, usableCPUs.count))
    }

    private static let maskBytes = 128  // 1,024 CPUs, glibc's cpu_set_t

    /// The CPUs the calling thread may run on (`sched_getaffinity`); at start-up, the process's.
    /// Empty when that cannot be read (more than 1,024 CPUs, not Linux): then nothing is pinned.
    static func usableCPUs() -> [Int] {
        #if os(Linux)
        typealias GetAffinity = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> CInt
        guard let address = GlibcSymbol.address(of: "sched_getaffinity") else { return [] }
        let getAffinity = unsafeBitCast(address, to: GetAffinity.self)
        var mask = [UInt8](repeating: 0, count: maskBytes)
        let ok = mask.withUnsafeMutableBytes { getAffinity(0, $0.count, $0.baseAddress!) == 0 }
        guard ok else { return [] }
        return (0..<mask.count * 8).filter { mask[$0 / 8] & (1 << ($0 % 8)) != 0 }
        #else
        return []
        #endif
    }

    /// Pins the calling thread to `cpu`; false when the kernel (or a seccomp filter) refuses, and the
    /// thread then stays where the scheduler puts it.
    static func pinCurrentThread(to cpu: Int) -> Bool {
        #if os(Linux)
        typealias SetAffinity = @convention(c) (pid_t, Int, UnsafeRawPointer) -> CInt
        guard cpu >= 0, cpu < maskBytes * 8, let address = GlibcSymbol.address(of: "sched_setaffinity") else { return false }
        let setAffinity = unsafeBitCast(address, to: SetAffinity.self)
        var mask = [UInt8](repeating: 0, count: maskBytes)
        mask[cpu / 8] = 1 << (cpu % 8)
        return mask.withUnsafeBytes { setAffinity(0, $0.count, $0.baseAddress!) == 0 }
        #else
        return false
        #endif
    }
}
