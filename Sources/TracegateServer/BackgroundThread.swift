import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Scheduling for the threads that build and deliver traces: they run only on CPU time forwarding
/// does not want.
enum BackgroundThread {
    /// Names the calling thread (as `ps -L` and `/proc/PID/task/*/comm` show it; at most 15 bytes),
    /// then puts it in `SCHED_IDLE` (it runs only on a CPU nothing else wants), or at nice 19 where
    /// that is refused. On Linux both apply to the calling thread alone.
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
        #endif
    }
}

/// One event-loop thread at idle priority for trace export: the tracking-server client's I/O runs on
/// it, and so do the exporters' tasks (batching, OTLP encoding, reading the spool back), so none of
/// that competes with the data plane's event loops for a busy CPU.
final class ExportExecutor: TaskExecutor, @unchecked Sendable {
    let group: MultiThreadedEventLoopGroup
    private let loop: EventLoop

    init() {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        loop = group.next()
        loop.execute { BackgroundThread.become("tg-export") }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    func shutdown() async {
        try? await group.shutdownGracefully()
    }
}
