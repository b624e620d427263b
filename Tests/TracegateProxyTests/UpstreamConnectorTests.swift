import NIOCore
import NIOEmbedded
import NIOPosix
import XCTest

@testable import TracegateProxy

final class UpstreamConnectorTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup!
    private var listener: Channel!

    override func setUpWithError() throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        listener = try ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
    }

    override func tearDownWithError() throws {
        try listener.close().wait()
        try group.syncShutdownGracefully()
    }

    private func connector(host: String) throws -> UpstreamConnector {
        let upstream = ProxyConfiguration.Upstream(host: host, port: listener.localAddress!.port!, usesTLS: false)
        return try UpstreamConnector(upstream: upstream, configuration: ProxyConfiguration(upstream: upstream))
    }

    /// An IP literal is connected to as an address: no resolver, no Happy Eyeballs, no SNI name.
    func testAnIPLiteralHostConnectsToItsAddress() throws {
        let connector = try connector(host: "127.0.0.1")
        XCTAssertEqual(connector.literalAddress, try SocketAddress(ipAddress: "127.0.0.1", port: listener.localAddress!.port!))
        XCTAssertNil(connector.serverHostname)
        let connection = try connector.connect(on: group.next()).wait()
        XCTAssertEqual(connection.channel.remoteAddress, connector.literalAddress)
        try connection.channel.close().wait()
    }

    /// A host name is resolved on every connect (DNS changes are seen) and kept for TLS.
    func testAHostNameIsResolvedWhenConnecting() throws {
        let connector = try connector(host: "localhost")
        XCTAssertNil(connector.literalAddress)
        XCTAssertEqual(connector.serverHostname, "localhost")
        let connection = try connector.connect(on: group.next()).wait()
        XCTAssertEqual(connection.channel.remoteAddress?.port, listener.localAddress!.port!)
        try connection.channel.close().wait()
    }

    /// Request ids come from the loop's generator: distinct version-4 UUIDs.
    func testTheLoopHandsOutDistinctVersion4RequestIDs() {
        let loop = EmbeddedEventLoop()
        let shared = LoopShared(eventLoop: loop, pools: [], observer: nil)
        let ids = (0..<1000).map { _ in shared.generateRequestID() }
        XCTAssertEqual(Set(ids).count, 1000)
        for id in ids {
            let bytes = Array(id.utf8)
            XCTAssertEqual(bytes.count, 36)
            XCTAssertEqual(bytes[14], UInt8(ascii: "4"), id)
            XCTAssertTrue("89ab".utf8.contains(bytes[19]), id)
        }
    }
}
