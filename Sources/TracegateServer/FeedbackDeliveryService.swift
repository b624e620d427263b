import ServiceLifecycle
import TracegateExport

/// Delivers queued feedback (`feedback_path`) to MLflow on the export thread, until shutdown.
struct FeedbackDeliveryService: Service {
    let delivery: FeedbackDelivery
    let executor: ExportExecutor

    func run() async {
        let delivery = self.delivery
        await withTaskCancellationOrGracefulShutdownHandler {
            await withTaskExecutorPreference(executor) { await delivery.run() }
        } onCancelOrGracefulShutdown: {
            delivery.stop()
        }
        try? await gracefulShutdown()
    }
}
