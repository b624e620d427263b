import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import XCTest

@testable import TracegateConfig
@testable import TracegateServer

/// A server that answers every request with `response`, `delay` after its head arrived, and says when
/// one arrived.
private final class CannedResponder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let delay: TimeAmount
    let response: String
    let arrived: EventLoopPromise<Void>?
    private var received = ""

    init(delay: TimeAmount, response: String, arrived: EventLoopPromise<Void>?) {
        self.delay = delay
        self.response = response
        self.arrived = arrived
    }

    static let hello = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
    static let unavailable = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"

    static func start(on eventLoops: EventLoopGroup, delay: TimeAmount, response: String, arrived: EventLoopPromise<Void>?) async throws -> Channel {
        try await ServerBootstrap(group: eventLoops)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CannedResponder(delay: delay, response: response, arrived: arrived))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += String(buffer: unwrapInboundIn(data))
        guard received.contains("\r\n\r\n") else { return }
        received = ""
        arrived?.succeed()
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let response = self.response
        context.eventLoop.scheduleTask(in: delay) {
            let context = loopBound.value
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: response)), promise: nil)
        }
    }
}

/// Collects what the proxy answers until `expected` bytes came.
private final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let done: EventLoopPromise<String>
    let ending: String
    private var text = ""

    init(done: EventLoopPromise<String>, ending: String) {
        self.done = done
        self.ending = ending
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        text += String(buffer: unwrapInboundIn(data))
        if text.hasSuffix(ending) { done.succeed(text) }
    }

    func channelInactive(context: ChannelHandlerContext) { done.succeed(text) }
}

final class TracegateServicesTests: XCTestCase {
    /// The services start in the order a graceful shutdown must undo: a `ServiceGroup` stops them in reverse.
    func testServicesStopListenerFirstThenAdminBuilderExportersTransportAndAccessLogLast() async throws {
        let fixture = try await Fixture.start(upstreamDelay: .milliseconds(1))
        let names = fixture.services.services.map { String(describing: type(of: $0)) }
        XCTAssertEqual(
            names.reversed(),
            [
                "ProxyService", "AdminService", "MemoryReturnService", "CertificateReloadService", "TraceBuilderService",
                "TraceExportService", "ExportTransportService", "AccessLogService",
            ])
        try await fixture.stop()
    }

    /// SIGTERM's path, in process: an exchange in flight when shutdown begins is answered, its trace is
    /// built after the drain, then spooled by the exporter (its tracking server is down), and its
    /// access-log line written before the group returns.
    func testShutdownDrainsThenBuildsThenSpoolsThenWritesTheAccessLog() async throws {
        let fixture = try await Fixture.start(upstreamDelay: .milliseconds(400))
        let response = try await fixture.send(path: "/in-flight", whenArrivedDo: { await fixture.group.triggerGracefulShutdown() })
        XCTAssertTrue(response.hasPrefix("HTTP/1.1 200 OK"), response)
        XCTAssertTrue(response.hasSuffix("hello"), response)
        try await fixture.run.value

        let order = fixture.messages.withLockedValue { $0.map(\.0) }
        let drain = try XCTUnwrap(order.firstIndex { $0.hasPrefix("shutting down: draining") }, "\(order)")
        let built = try XCTUnwrap(order.firstIndex(of: "trace capture finished"), "\(order)")
        let exported = try XCTUnwrap(order.firstIndex(of: "trace export finished"), "\(order)")
        XCTAssertLessThan(drain, built)
        XCTAssertLessThan(built, exported)
        let export = fixture.messages.withLockedValue { $0[exported].1 }
        XCTAssertEqual(export["spooled"]?.description, "1", "the in-flight exchange's trace is in the spool: \(export)")

        XCTAssertTrue(try fixture.spooledText().contains("/in-flight"), "the spool holds that exchange's trace")
        let accessLog = try String(contentsOfFile: fixture.accessLogPath, encoding: .utf8)
        XCTAssertTrue(accessLog.contains("/in-flight"), "access log: \(accessLog)")
        try await fixture.cleanUp()
    }

    /// One tracegate in process: a slow upstream, a tracking server that answers 503 to everything, a
    /// spool and an access-log file in a temporary directory.
    private struct Fixture {
        let services: TracegateServices
        let group: ServiceGroup
        let run: Task<Void, Error>
        let messages: NIOLockedValueBox<[(String, Logger.Metadata)]>
        let eventLoops: MultiThreadedEventLoopGroup
        let upstream: Channel
        let trackingServer: Channel
        let arrived: EventLoopPromise<Void>
        let directory: String
        var accessLogPath: String { directory + "/access.log" }

        static func start(upstreamDelay: TimeAmount) async throws -> Fixture {
            let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
            let arrived = eventLoops.next().makePromise(of: Void.self)
            let upstream = try await CannedResponder.start(
                on: eventLoops, delay: upstreamDelay, response: CannedResponder.hello, arrived: arrived)
            let trackingServer = try await CannedResponder.start(
                on: eventLoops, delay: .zero, response: CannedResponder.unavailable, arrived: nil)
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("services-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)

            var settings = try SettingsLoader.load(
                arguments: ["--upstream", "http://127.0.0.1:\(upstream.localAddress!.port!)"], environment: [:]
            ) { _ in throw CocoaError(.fileNoSuchFile) }
            settings.listen = HostPort(host: "127.0.0.1", port: 0)
            settings.adminListen = HostPort(host: "127.0.0.1", port: 0)
            settings.mlflowTrackingURI = "http://127.0.0.1:\(trackingServer.localAddress!.port!)"
            settings.spoolDir = directory + "/spool"
            settings.capture = .full
            settings.accessLog = .text
            settings.shutdownGrace = .seconds(5)
            settings.exportDrainTimeout = .seconds(2)
            let accessLog = open(directory + "/access.log", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            XCTAssertGreaterThanOrEqual(accessLog, 0)

            let messages = NIOLockedValueBox<[(String, Logger.Metadata)]>([])
            let logger = Logger(label: "test") { _ in RecordingLogHandler(messages: messages) }
            let services = try await TracegateServices.start(
                settings: settings, eventLoops: eventLoops, threads: 2, logger: logger, accessLogFD: accessLog)
            let group = ServiceGroup(services: services.services, logger: logger)
            let run = Task {
                defer { close(accessLog) }
                try await group.run()
            }
            return Fixture(
                services: services, group: group, run: run, messages: messages, eventLoops: eventLoops, upstream: upstream,
                trackingServer: trackingServer,
                arrived: arrived, directory: directory)
        }

        /// Sends one GET through the proxy; runs `whenArrived` once the upstream has its head.
        func send(path: String, whenArrivedDo whenArrived: @escaping @Sendable () async -> Void) async throws -> String {
            let done = eventLoops.next().makePromise(of: String.self)
            let client = try await ClientBootstrap(group: eventLoops)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ResponseCollector(done: done, ending: "hello"))
                    }
                }
                .connect(to: services.publicAddress).get()
            let request = "GET \(path) HTTP/1.1\r\nhost: test\r\nx-user-id: alice\r\n\r\n"
            try await client.writeAndFlush(client.allocator.buffer(string: request))
            try await arrived.futureResult.get()
            await whenArrived()
            let response = try await done.futureResult.get()
            try? await client.close()
            return response
        }

        /// Every file under the spool directory, concatenated.
        func spooledText() throws -> String {
            let root = directory + "/spool"
            var text = ""
            for case let file as String in FileManager.default.enumerator(atPath: root)! {
                if let contents = try? String(contentsOfFile: root + "/" + file, encoding: .utf8) { text += contents }
            }
            return text
        }

        func stop() async throws {
            await group.triggerGracefulShutdown()
            try await run.value
            try await cleanUp()
        }

        func cleanUp() async throws {
            arrived.succeed()  // when no request came
            try await upstream.close()
            try await trackingServer.close()
            try await eventLoops.shutdownGracefully()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}
