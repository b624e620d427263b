/// How a background thread (trace building, export) pauses after each burst of work, from how many
/// tasks the kernel has ready to run at that moment.
///
/// Idle priority does not keep such a thread out of the way once the CPUs are contended: with a
/// yield as its pause, an idle-priority builder was seen on the CPU, burst after burst, while
/// clients, event loops and the kernel's softirq threads were ready and waited for tens of
/// milliseconds (README, "Tracing beside another busy process"). A yield leaves the thread ready to
/// be picked again; a sleep takes it off the run queue.
///
/// So: while no more tasks are ready than there are CPUs (this thread included), the thread only
/// yields, which costs no context switch. Once every CPU has another task ready besides it, it
/// sleeps `contendedPauseNanoseconds` after each burst, twenty times a 50 µs burst. Longer pauses
/// leave more to other work but build fewer traces: with 5 ms, four clients posting chat requests
/// got 1,665 of 4,000 exchanges traced (3,438 with 1 ms).
struct BackgroundPacing {
    /// CPUs this process may use (the smallest of the online CPUs, its affinity mask and its CPU
    /// quota). The ready count is the whole kernel's, so contention elsewhere can count too: that
    /// errs towards sleeping.
    let processors: Int
    /// Whether the thread runs at nice 19 because idle priority was refused: a yield at weight 15 is
    /// not sure to let an event loop run first, so it always sleeps a little.
    let idlePolicyRefused: Bool

    /// What the thread does after a burst.
    enum Pause: Equatable {
        case yield
        case sleep(nanoseconds: Int)
    }

    /// The pause once the CPUs are contended.
    static let contendedPauseNanoseconds = 1_000_000
    /// The pause when the ready count cannot be read: between a yield and the contended pause.
    static let unknownLoadPauseNanoseconds = contendedPauseNanoseconds / 4
    /// The least a sleep is at nice 19: shorter sleeps can expire before the thread is switched out.
    static let shortestSleepNanoseconds = 10_000

    /// The pause after a burst, given the tasks ready to run (this thread included), if known.
    func pause(readyTasks: Int?) -> Pause {
        guard let readyTasks else { return .sleep(nanoseconds: Self.unknownLoadPauseNanoseconds) }
        if readyTasks - 1 >= processors { return .sleep(nanoseconds: Self.contendedPauseNanoseconds) }
        return idlePolicyRefused ? .sleep(nanoseconds: Self.shortestSleepNanoseconds) : .yield
    }
}
