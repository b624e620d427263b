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

    private static let unreachableUpstream = ProxyConfiguration(upstream: .init(host: "127.0.0.1", port: 9, usesTLS: false))

    /// Counts the exchanges each loop's connections start.
    private final class ExchangesPerLoop: ExchangeObserver {
        let counts: NIOLockedValueBox<[ObjectIdentifier: Int]>
        private let eventLoop: ObjectIdentifier?

        init(eventLoop: ObjectIdentifier? = nil, counts: NIOLockedValueBox<[ObjectIdentifier: Int]> = .init([:])) {
            self.eventLoop = eventLoop
            self.counts = counts
        }

        func forEventLoop(_ eventLoop: EventLoop) -> ExchangeObserver {
            ExchangesPerLoop(eventLoop: ObjectIdentifier(eventLoop), counts: counts)
        }

        func exchangeStarted(_ head: RequestHead, requestID: String) -> ExchangeTap? {
            if let eventLoop { counts.withLockedValue { $0[eventLoop, default: 0] += 1 } }
            return nil
        }

        func exchangeFinished(_ summary: ExchangeSummary, tap: ExchangeTap?) {}
    }

    /// One request on a new connection, read until the proxy closes it; nil when the connection is refused.
    private static func request(port: Int) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var response = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        return String(decoding: response, as: UTF8.self)
    }

    /// With several event loops each has a listening socket of its own on the one port, and the
    /// connections it accepts are served on it; all of them close at shutdown.
    func testEveryEventLoopAcceptsOnTheSamePort() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let observer = ExchangesPerLoop()
        let listener = try ProxyListener(configuration: Self.unreachableUpstream, group: group, observer: observer)
        let address = try await listener.start(host: "127.0.0.1", port: 0)
        let port = try XCTUnwrap(address.port)

        let sockets = listener.listeningSockets
        XCTAssertEqual(sockets.count, 2)
        XCTAssertEqual(Set(sockets.map { ObjectIdentifier($0.eventLoop) }).count, 2, "one listening socket per loop")
        XCTAssertEqual(Set(sockets.map { $0.localAddress?.port }), [port])

        for _ in 0..<64 {
            let response = try XCTUnwrap(Self.request(port: port))
            XCTAssertTrue(response.hasPrefix("HTTP/1.1 502 "), response)
        }
        let counts = observer.counts.withLockedValue { $0 }
        XCTAssertEqual(counts.values.reduce(0, +), 64)
        XCTAssertEqual(counts.count, 2, "both loops accepted connections: \(counts)")

        await listener.shutdown(grace: .seconds(1))
        XCTAssertNil(Self.request(port: port), "a listening socket outlived the shutdown")
        try await group.shutdownGracefully()
    }

    /// Sharing the port between loops must not let a second process (or listener) in: it fails
    /// with "address in use", whether the port's holder shares it or not.
    func testASecondListenerOnTheSamePortIsRefused() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let first = try ProxyListener(configuration: Self.unreachableUpstream, group: group, observer: nil)
        let firstAddress = try await first.start(host: "127.0.0.1", port: 0)
        let port = try XCTUnwrap(firstAddress.port)
        let second = try ProxyListener(configuration: Self.unreachableUpstream, group: group, observer: nil)
        await Self.assertAddressInUse(second, port: port, "a second listener bound a port in use")
        XCTAssertTrue(second.listeningSockets.isEmpty)
        await first.shutdown(grace: .seconds(1))

        let plain = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let plainPort = try XCTUnwrap(plain.localAddress?.port)
        let third = try ProxyListener(configuration: Self.unreachableUpstream, group: group, observer: nil)
        await Self.assertAddressInUse(third, port: plainPort, "a listener bound a port another socket listens on")
        try await plain.close()
        try await group.shutdownGracefully()
    }

    /// Accepted connections have Nagle's algorithm off (inherited from the listening socket), and
    /// nothing that needs privilege (SO_DEBUG) is set on them.
    func testAcceptedConnectionsHaveNoDelayAndNoDebug() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let listener = try ProxyListener(configuration: Self.unreachableUpstream, group: group, observer: nil)
        let address = try await listener.start(host: "127.0.0.1", port: 0)
        let client = try await ClientBootstrap(group: group).connect(to: address).get()
        var accepted: [Channel] = []
        for _ in 0..<200 where accepted.isEmpty {
            accepted = listener.openChannels
            if accepted.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        }
        let channel = try XCTUnwrap(accepted.first)
        let noDelay = try await channel.getOption(ChannelOptions.tcpOption(.tcp_nodelay)).get()
        XCTAssertNotEqual(noDelay, 0, "TCP_NODELAY")
        let debug = try await channel.getOption(ChannelOptions.socketOption(NIOBSDSocket.Option(rawValue: SO_DEBUG))).get()
        XCTAssertEqual(debug, 0, "SO_DEBUG")
        try await client.close()
        await listener.shutdown(grace: .seconds(1))
        try await group.shutdownGracefully()
    }

    private static func assertAddressInUse(
        _ listener: ProxyListener, port: Int, _ message: String, file: StaticString = #filePath, line: UInt = #line
    ) async {
        do {
            _ = try await listener.start(host: "127.0.0.1", port: port)
            XCTFail(message, file: file, line: line)
        } catch let error as IOError {
            XCTAssertEqual(error.errnoCode, EADDRINUSE, file: file, line: line)
        } catch {
            XCTFail("\(error)", file: file, line: line)
        }
    }
}
