import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Idle keep-alive upstream connections of one event loop, most recently used first.
/// Only ever touched on its own event loop (asserted in debug builds), so it needs no lock (hence
/// `@unchecked Sendable`).
final class UpstreamPool: @unchecked Sendable {
    let eventLoop: EventLoop
    private let connector: UpstreamConnecting
    private let maxIdle: Int
    private var idle: [UpstreamConnection] = []
    private var closed = false

    init(eventLoop: EventLoop, connector: UpstreamConnecting, maxIdle: Int) {
        self.eventLoop = eventLoop
        self.connector = connector
        self.maxIdle = maxIdle
    }

    /// An idle connection that is still open, if there is one.
    func takeIdle() -> UpstreamConnection? {
        eventLoop.assertInEventLoop()
        while let connection = idle.popLast() {
            if connection.channel.isActive { return connection }
        }
        return nil
    }

    func connect() -> EventLoopFuture<UpstreamConnection> {
        eventLoop.assertInEventLoop()
        return connector.connect(on: eventLoop)
    }

    /// Returns a connection that finished an exchange cleanly; it is kept if there is room.
    func release(_ connection: UpstreamConnection) {
        eventLoop.assertInEventLoop()
        connection.handler.owner = nil
        connection.hasServed = true
        guard !closed, connection.channel.isActive, idle.count < maxIdle else {
            connection.channel.close(promise: nil)
            return
        }
        if connection.handler.onClose == nil {
            // Set once per connection (not per release): removing a connection that is not idle does nothing.
            connection.handler.onClose = { [weak self] handler in
                self?.idle.removeAll { $0.handler === handler }
            }
        }
        idle.append(connection)
    }

    /// Closes every idle connection and stops keeping new ones.
    func closeAll() {
        eventLoop.assertInEventLoop()
        closed = true
        let connections = idle
        idle.removeAll()
        for connection in connections {
            connection.handler.onClose = nil
            connection.channel.close(promise: nil)
        }
    }
}
