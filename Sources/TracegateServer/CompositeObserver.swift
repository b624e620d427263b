import NIOCore
import NIOHTTP1
import NIOPosix
import TracegateExport
import TracegateProxy
import TracegateTrace

/// Several observers as one: the first tap offered wins, every observer sees every end.
public final class CompositeObserver: ExchangeObserver {
    let observers: [ExchangeObserver]

    public init(_ observers: [ExchangeObserver]) { self.observers = observers }

    public func forEventLoop(_ eventLoop: EventLoop) -> ExchangeObserver {
        CompositeObserver(observers.map { $0.forEventLoop(eventLoop) })
    }

    public func exchangeStarted(_ head: RequestHead, requestID: String) -> ExchangeTap? {
        var tap: ExchangeTap?
        for observer in observers {
            if let offered = observer.exchangeStarted(head, requestID: requestID), tap == nil { tap = offered }
        }
        return tap
    }

    public func responseStarted(streamed: Bool) {
        for observer in observers { observer.responseStarted(streamed: streamed) }
    }

    public func tunnelOpened() {
        for observer in observers { observer.tunnelOpened() }
    }

    public func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {
        for observer in observers { observer.exchangeFinished(summary, tap: tap) }
    }

    public func connectionEvent(_ event: ConnectionEvent) {
        for observer in observers { observer.connectionEvent(event) }
    }
}
