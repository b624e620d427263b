import Dispatch
import ServiceLifecycle

/// Writes the access log's buffered lines every 100 ms, and once more at shutdown, after everything
/// else has stopped. Writes happen on a queue of their own: a slow reader of standard output blocks
/// that queue, never an event loop or the tasks of other services.
struct AccessLogService: Service {
    let writer: LineWriter
    var interval: Duration = .milliseconds(100)
    private let queue = DispatchQueue(label: "tracegate.access-log")

    init(writer: LineWriter) { self.writer = writer }

    func run() async {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let interval = self.interval
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            await flush()
        }
        await flush()
    }

    private func flush() async {
        let writer = self.writer
        await withCheckedContinuation { (written: CheckedContinuation<Void, Never>) in
            queue.async {
                writer.flush()
                written.resume()
            }
        }
    }
}
