import AsyncHTTPClient
import ServiceLifecycle

/// The HTTP client the exporters and the feedback delivery share, and the idle-priority thread they
/// run on: started first and stopped last, once every exporter has delivered or spooled.
struct ExportTransportService: Service {
    let http: HTTPClient
    let executor: ExportExecutor

    func run() async {
        try? await gracefulShutdown()
        try? await http.shutdown()
        await executor.shutdown()
    }
}
