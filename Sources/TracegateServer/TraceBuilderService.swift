import Foundation
import Logging
import ServiceLifecycle

/// Runs the trace builder's thread (`TracingPipeline.runBuilder`). At shutdown, once the listener has
/// drained, it builds what is left and hands it on, then tells every exporter that nothing more is
/// coming: their drain deadlines start together, whatever order they are stopped in.
struct TraceBuilderService: Service {
    let pipeline: TracingPipeline
    let logger: Logger

    func run() async {
        let pipeline = self.pipeline
        await withTaskCancellationOrGracefulShutdownHandler {
            await withCheckedContinuation { (stopped: CheckedContinuation<Void, Never>) in
                let thread = Thread {
                    pipeline.runBuilder()
                    stopped.resume()
                }
                thread.start()
            }
        } onCancelOrGracefulShutdown: {
            pipeline.stopBuilding()
        }
        for export in pipeline.exports { export.exporter.shutdown() }
        logger.info("trace capture finished", metadata: ["dropped_before_export": "\(pipeline.droppedBeforeExport)"])
    }
}
