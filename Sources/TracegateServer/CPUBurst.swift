import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

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
