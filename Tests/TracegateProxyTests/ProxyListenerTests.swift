import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest

@testable import TracegateProxy

final class ProxyListenerTests: XCTestCase {
    /// Asked once per event loop; answers a new observer each time.
    private final class PerLoopObserver: ExchangeObserver {
        let asked = NIOLockedValueBox<[ObjectIdentifier]>([])
        let made = NIOLockedValueBox<[ObjectIdentifier: ObjectIdentifier]>([:])

        func forEventLoop(_ eventLoop: EventLoop) -> ExchangeObserver {
            let made = PerLoopObserver()
            asked.withLockedValue { $0.append(ObjectIdentifier(eventLoop)) }
            self.made.withLockedValue { $0[ObjectIdentifier(eventLoop)] = ObjectIdentifier(made) }
            return made
        }

        func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {}
    }

    /// Every event loop's connections get the observer made for that loop, so an observer that
    /// counts can keep per-loop figures without locks.
    func testEveryEventLoopGetsAnObserverOfItsOwn() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        defer { try? group.syncShutdownGracefully() }
        let observer = PerLoopObserver()
        let listener = try ProxyListener(
            configuration: ProxyConfiguration(upstream: .init(host: "127.0.0.1", port: 9, usesTLS: false)), group: group,
            observer: observer)
        let loops = group.makeIterator().map { ObjectIdentifier($0) }
        XCTAssertEqual(observer.asked.withLockedValue { $0 }.sorted(by: { "\($0)" < "\($1)" }), loops.sorted(by: { "\($0)" < "\($1)" }))
        let made = observer.made.withLockedValue { $0 }
        for eventLoop in group.makeIterator() {
            let given = try XCTUnwrap(listener.loopObserver(for: eventLoop))
            XCTAssertEqual(ObjectIdentifier(given), made[ObjectIdentifier(eventLoop)])
        }
    }
}
