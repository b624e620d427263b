/// How a background thread (trace building, export) pauses after each burst of work, from how many
/// tasks the kernel has ready to run at that moment.
///
/// Idle priority does not keep such a thread out of the way once the CPUs are contended. The kernel's
/// scheduler (EEVDF) keeps a waking thread's lag, and an idle-priority thread that slept comes back
/// owed so much virtual time that it is picked before ready event loops, clients and the kernel's own
/// softirq threads, burst after burst. Measured with a normal-priority process taking half a CPU
/// beside `wrk -c32` and capture on: `wrk`'s threads waited up to 124 ms and `ksoftirqd` up to 56 ms
/// with `tg-builder` on the CPU, and the p99 rose from 5 to 33–65 ms. A yield does not help (the
/// thread stays ready and is picked again); only leaving the run queue does.
///
/// So: while fewer tasks are ready than there are CPUs, a CPU is idle and the thread only yields,
/// which costs no context switch. Once every CPU has a task ready besides it, it sleeps
/// `contendedPause` after each burst, which caps what it takes from them at about 1% of one CPU.
/// Even 5% was too much beside a busy MLflow server: the process's threads share one scheduling
/// group (an autogroup, or the service's cgroup), so the builder's time held back its event loops
/// (p99.9 at `wrk -c32` 14–35 ms with a 1 ms pause, 6–9 ms with 5 ms, 8–12 ms with capture off).
struct BackgroundPacing: Equatable {
    /// CPUs the kernel schedules on (the ready count is the whole kernel's, not this process's).
    let processors: Int
    /// Whether the thread runs at nice 19 because idle priority was refused: a yield at weight 15 is
    /// not sure to let an event loop run first, so it always sleeps a little.
    let idlePolicyRefused: Bool

    enum Pause: Equatable {
        case yield
        case sleep(nanoseconds: Int)
    }

    /// The pause once the CPUs are contended: a hundred bursts' worth.
    static let contendedPause = 5_000_000
    /// The least a sleep is at nice 19: shorter sleeps can expire before the thread is switched out.
    static let shortestSleep = 10_000

    /// The pause after a burst, given the tasks ready to run (this thread included), if known.
    func pause(readyTasks: Int?) -> Pause {
        guard let readyTasks else { return .sleep(nanoseconds: Self.contendedPause / 4) }  // unknown: a middle course
        if readyTasks - 1 >= processors { return .sleep(nanoseconds: Self.contendedPause) }
        return idlePolicyRefused ? .sleep(nanoseconds: Self.shortestSleep) : .yield
    }
}
