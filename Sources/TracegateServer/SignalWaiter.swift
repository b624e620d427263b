import AsyncHTTPClient
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import TracegateConfig
import TracegateProxy
import TracegateExport
import TracegateTrace

/// Delivers SIGTERM/SIGINT to async code instead of killing the process.
/// (`@unchecked Sendable`: `received` and `waiter` are touched only on its serial `queue`.)
final class SignalWaiter: @unchecked Sendable {
    private let sources: [DispatchSourceSignal]
    private let queue = DispatchQueue(label: "tracegate.signals")
    private var received: [Int32] = []
    private var waiter: CheckedContinuation<Int32, Never>?

    init(signals: [Int32]) {
        var sources: [DispatchSourceSignal] = []
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            sources.append(source)
        }
        self.sources = sources
        for (source, number) in zip(sources, signals) {
            source.setEventHandler { [unowned self] in self.deliver(number) }
            source.resume()
        }
    }

    private func deliver(_ number: Int32) {
        if let waiter {
            self.waiter = nil
            waiter.resume(returning: number)
        } else {
            received.append(number)
        }
    }

    /// Waits for the next signal.
    func next() async -> Int32 {
        await withCheckedContinuation { continuation in
            queue.async {
                if !self.received.isEmpty {
                    continuation.resume(returning: self.received.removeFirst())
                } else {
                    self.waiter = continuation
                }
            }
        }
    }
}
