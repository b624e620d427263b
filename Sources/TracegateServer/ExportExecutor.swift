import NIOCore
import NIOPosix
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

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

    /// Runs `work` on this thread as a service's body: `stop` asks it to finish at the service's turn
    /// to stop (or on cancellation). Work that returns early (an exporter whose experiment was deleted)
    /// still waits for that turn, since a service that ends on its own stops the whole group.
    func runAsService(_ work: @escaping @Sendable () async -> Void, stop: @escaping @Sendable () -> Void) async {
        await withTaskCancellationOrGracefulShutdownHandler {
            await withTaskExecutorPreference(self) { await work() }
        } onCancelOrGracefulShutdown: {
            stop()
        }
        try? await gracefulShutdown()
    }

    func shutdown() async {
        try? await group.shutdownGracefully()
    }
}
