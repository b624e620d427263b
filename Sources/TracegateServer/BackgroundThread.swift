import Atomics
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Scheduling for the threads that build and deliver traces: they run only on CPU time forwarding
/// does not want, and never keep a CPU long.
///
/// Idle priority alone is not enough. Linux's EEVDF scheduler picks the next task by eligibility,
/// not by policy: when an event loop was preempted (say by the process it just woke) and is, for the
/// moment, ahead of its fair share, an idle-priority thread can be picked before it and then keeps
/// the CPU until it sleeps or the next scheduler tick (4 ms at 250 Hz). That is where the latency
/// tail with tracing on came from. So background work runs in bursts of about `burst` (a burst ends
/// after the unit of work that passes it), each followed by a pause (`CPUBurst`), which hands the CPU
/// to any runnable event loop: a yield while no more tasks are ready than there are CPUs, a sleep
/// once the CPUs are contended (`BackgroundPacing`).
enum BackgroundThread {
    /// Names the calling thread (as `ps -L` and `/proc/PID/task/*/comm` show it; at most 15 bytes),
    /// then puts it in `SCHED_IDLE` (it runs only on a CPU nothing else wants), or at nice 19 where
    /// that is refused, with a 1 µs timer slack so its sleeps are short. On Linux all of it applies
    /// to the calling thread alone.
    static func become(_ name: String) {
        ReadyTasks.prepare()
        _ = processors
        #if os(Linux)
        if let setName = GlibcSymbol.address(of: "pthread_setname_np") {
            typealias SetName = @convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32
            _ = unsafeBitCast(setName, to: SetName.self)(pthread_self(), name)  // longer names are refused
        }
        let schedIdle: Int32 = 5  // SCHED_IDLE in <sched.h>, not exported to Swift
        var parameters = sched_param(sched_priority: 0)
        if sched_setscheduler(0, schedIdle, &parameters) != 0 {
            setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
            idlePolicyRefused.store(true, ordering: .relaxed)
        }
        if let prctl = GlibcSymbol.address(of: "prctl") {
            typealias Prctl = @convention(c) (Int32, UInt) -> Int32  // variadic in C; two arguments suffice
            let setTimerSlack: Int32 = 29  // PR_SET_TIMERSLACK in <linux/prctl.h>
            _ = unsafeBitCast(prctl, to: Prctl.self)(setTimerSlack, 1_000)
        }
        #endif
    }

    /// How long a background thread works before it lets event loops have the CPU (checked after each
    /// unit of work, so a burst can run over by one unit).
    static let burst: Int64 = 50_000  // nanoseconds

    /// `SCHED_IDLE` was refused: the threads run at nice 19 instead.
    private static let idlePolicyRefused = ManagedAtomic(false)

    /// Lets event loops and every other ready task have the CPU, as `BackgroundPacing` decides.
    ///
    /// Why a yield while the CPUs are not contended: a loop that wakes preempts an idle-priority
    /// thread at once, and the yield (after a `pread` of `/proc/loadavg`) costs no context switch,
    /// where a 10 µs sleep cost two every burst (at 100 WebSocket connections, each message a traced
    /// turn, 3–13% more messages per second in 8 paired rounds). At nice 19 (weight 15) that margin is
    /// not sure, so the thread sleeps 10 µs, leaving the run queue (a shorter sleep can expire before
    /// it is switched out).
    static func pause() { pause(readyTasks: ReadyTasks.count()) }

    /// The pause for `readyTasks` tasks ready to run (this thread included), carried out.
    static func pause(readyTasks: Int?) {
        switch pacing.pause(readyTasks: readyTasks) {
        case .yield:
            sched_yield()
        case .sleep(let nanoseconds):
            var request = timespec(tv_sec: nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
            nanosleep(&request, nil)
        }
    }

    /// The rules `pause` follows for the calling thread.
    static var pacing: BackgroundPacing {
        BackgroundPacing(processors: processors, idlePolicyRefused: idlePolicyRefused.load(ordering: .relaxed))
    }

    /// The CPUs this thread may use, as the event loops count them (affinity mask and CPU quota);
    /// counted when the first background thread starts.
    static let processors = EventLoopPlacement.threadCount(
        setting: 0, coreCount: System.coreCount, usableCPUs: EventLoopPlacement.usableCPUs())
}
