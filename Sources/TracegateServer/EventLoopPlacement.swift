#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TracegateConfig

/// Which CPU each event loop runs on. Left to the scheduler, two busy loops could share one CPU for
/// seconds while the other CPU ran the clients and upstream: requests then waited for the other
/// loop's turn, and the p99 latency doubled. Pinned, each loop keeps a CPU of its own, as nginx's
/// `worker_cpu_affinity auto` does.
struct EventLoopPlacement: Equatable {
    /// The CPU of each event loop, in loop order; nil when the scheduler places them.
    let cpus: [Int]?

    /// `auto` pins when there are two or more loops and at least one usable CPU for each (more loops
    /// than CPUs must share anyway; one loop gains nothing and would lose the freedom to move).
    init(threads: Int, usableCPUs: [Int], affinity: CPUAffinity) {
        guard affinity == .auto, threads > 1, usableCPUs.count >= threads else {
            cpus = nil
            return
        }
        cpus = Array(usableCPUs.sorted().prefix(threads))
    }

    /// The CPUs this process may run on (`sched_getaffinity`: a cpuset or `taskset` narrows them);
    /// empty when that cannot be read, and then nothing is pinned.
    static func usableCPUs() -> [Int] {
        typealias GetAffinity = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> CInt
        guard let address = GlibcSymbol.address(of: "sched_getaffinity") else { return [] }
        let getAffinity = unsafeBitCast(address, to: GetAffinity.self)
        var mask = [UInt8](repeating: 0, count: 128)  // 1,024 CPUs, glibc's cpu_set_t
        let ok = mask.withUnsafeMutableBytes { getAffinity(0, $0.count, $0.baseAddress!) == 0 }
        guard ok else { return [] }
        return (0..<mask.count * 8).filter { mask[$0 / 8] & (1 << ($0 % 8)) != 0 }
    }
}
