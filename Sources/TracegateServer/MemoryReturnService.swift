import ServiceLifecycle
import TracegateProxy

/// After a crowd of connections is gone (an attack, a burst), gives its memory back (`MemoryReturn`).
struct MemoryReturnService: Service {
    let listener: ProxyListener

    func run() async {
        var policy = MemoryReturn()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(2)) }
            if policy.observe(openConnections: listener.openConnections) { Malloc.releaseFreeMemory() }
        }
    }
}
