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
/// tail with tracing on came from. So background work runs in bursts of at most `burst`, each
/// followed by a short sleep (`CPUBurst`), which hands the CPU to any runnable event loop.
enum BackgroundThread {
    /// Names the calling thread (as `ps -L` and `/proc/PID/task/*/comm` show it; at most 15 bytes),
    /// then puts it in `SCHED_IDLE` (it runs only on a CPU nothing else wants), or at nice 19 where
    /// that is refused, with a 1 µs timer slack so its pauses are short. On Linux all of it applies
    /// to the calling thread alone.
    static func become(_ name: String) {
        #if os(Linux)
        if let setName = GlibcSymbol.address(of: "pthread_setname_np") {
            typealias SetName = @convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32
            _ = unsafeBitCast(setName, to: SetName.self)(pthread_self(), name)  // longer names are refused
        }
        let schedIdle: Int32 = 5  // SCHED_IDLE in <sched.h>, not exported to Swift
        var parameters = sched_param(sched_priority: 0)
        if sched_setscheduler(0, schedIdle, &parameters) != 0 {
            setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
        }
        if let prctl = GlibcSymbol.address(of: "prctl") {
            typealias Prctl = @convention(c) (Int32, UInt) -> Int32  // variadic in C; two arguments suffice
            let setTimerSlack: Int32 = 29  // PR_SET_TIMERSLACK in <linux/prctl.h>
            _ = unsafeBitCast(prctl, to: Prctl.self)(setTimerSlack, 1_000)
        }
        #endif
    }

    /// The longest a background thread works before it lets event loops have the CPU.
    static let burst: Int64 = 50_000  // nanoseconds

    /// Sleeps 10 µs: the scheduler then runs whatever else is runnable on this CPU. (A shorter sleep
    /// can expire before the thread is switched out, and then yields nothing.)
    static func pause() {
        var request = timespec(tv_sec: 0, tv_nsec: 10_000)
        nanosleep(&request, nil)
    }
}

/// Measures a background thread's work since its last pause; `pauseIfDue()` after each unit of work
/// pauses once a `BackgroundThread.burst` has been spent.
struct CPUBurst {
    private var started = NIODeadline.now()

    mutating func pauseIfDue() {
        let now = NIODeadline.now()
        guard (now - started).nanoseconds >= BackgroundThread.burst else { return }
        BackgroundThread.pause()
        started = NIODeadline.now()
    }
}

/// One event-loop thread at idle priority for trace export: the tracking-server client's I/O runs on
/// it, and so do the exporters' tasks (batching, OTLP encoding, reading the spool back), so none of
/// that competes with the data plane's event loops for a busy CPU.
///
///
/// Like the builder it works in bursts: before running a job, it pauses if the jobs run back to back
/// since the last pause or idle moment took a `BackgroundThread.burst`. (A job runs from one
/// suspension point to the next; the exporters' longest, encoding a batch, is a few hundred
/// microseconds.)
/// (`@unchecked Sendable`: its two `var`s are used only on the loop's one thread, in `run`.)
final class ExportExecutor: TaskExecutor, @unchecked Sendable {
    let group: MultiThreadedEventLoopGroup
    private let loop: EventLoop
    /// Time spent in jobs since the last pause or idle gap, and when the last job ended; used on the
    /// loop's thread only.
    private var busyNanos: Int64 = 0
    private var lastJobEnded = NIODeadline.uptimeNanoseconds(0)

    init() {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        loop = group.next()
        loop.execute { BackgroundThread.become("tg-export") }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { self.run(job) }
    }

    private func run(_ job: UnownedJob) {
        var started = NIODeadline.now()
        if (started - lastJobEnded).nanoseconds > BackgroundThread.burst {
            busyNanos = 0  // the thread was idle: a new burst starts
        } else if busyNanos >= BackgroundThread.burst {
            BackgroundThread.pause()
            busyNanos = 0
            started = NIODeadline.now()
        }
        job.runSynchronously(on: asUnownedTaskExecutor())
        lastJobEnded = NIODeadline.now()
        busyNanos += (lastJobEnded - started).nanoseconds
    }

    func shutdown() async {
        try? await group.shutdownGracefully()
    }
}
