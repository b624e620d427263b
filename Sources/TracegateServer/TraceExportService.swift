import Logging
import ServiceLifecycle
import TracegateExport

/// Runs one exporter on the export thread. Stopped after the builder: it delivers what it holds within
/// `export_drain_timeout`, spools the rest, and returns.
struct TraceExportService: Service {
    let export: TracingPipeline.Export
    let executor: ExportExecutor
    let logger: Logger

    func run() async {
        let exporter = export.exporter
        await executor.runAsService({ await exporter.run() }, stop: { exporter.shutdown() })
        let stats = exporter.stats
        logger.info(
            "trace export finished",
            metadata: [
                "exporter": "\(export.name)", "exported": "\(stats.exported)", "retries": "\(stats.retries)",
                "dropped": "\(stats.dropped)", "rejected": "\(stats.rejected)",
                "trace_info_failures": "\(stats.startTraceFailures + stats.traceInfoDropped)",
                "spooled": "\(exporter.spooledTraces)",
            ])
    }
}
